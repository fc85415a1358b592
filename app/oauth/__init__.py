"""OAuth connections to third-party providers (the development Sandbox provider lives in devtools.sandbox)."""

import warnings

from authlib.deprecate import AuthlibDeprecationWarning

# Authlib 1.9 prefers the `httpx2` package and warns when it falls back to httpx. Our stack is httpx
# (the guarded transport is an httpx transport), and the fallback is Authlib's supported path.
warnings.filterwarnings("ignore", "The httpx module is deprecated", AuthlibDeprecationWarning)
