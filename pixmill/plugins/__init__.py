"""The built-in plugins. Each module is one plugin family, registered through the `pixmill`
entry point group in setup.cfg exactly as a third-party plugin is; nothing imports them directly."""
