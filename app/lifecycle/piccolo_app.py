from pathlib import Path

from piccolo.conf.apps import AppConfig

APP_CONFIG = AppConfig(
    app_name="lifecycle",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[],  # raw SQL only (app.lifecycle.statements)
    migration_dependencies=[
        "app.accounts.piccolo_app",
        "app.events.piccolo_app",
        "app.webhooks.piccolo_app",
        "app.oauth.piccolo_app",
        "app.integrations.piccolo_app",
    ],
    commands=[],
)
