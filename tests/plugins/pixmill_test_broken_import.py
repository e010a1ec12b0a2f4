"""A plugin that fails while being imported, as a half-installed package would."""

raise RuntimeError("this plugin is broken on purpose")
