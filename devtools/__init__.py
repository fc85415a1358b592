"""Development tools, kept out of the product package `app`: the embedded PostgreSQL and Redis, the
`./task dev` supervisor, the demo receiver, the Sandbox OAuth authorization server, demo and synthetic
data. `app` never imports this package; a production install does not need it."""
