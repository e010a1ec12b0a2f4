"""Feature bundles: installable plugin packages plus the model files they need.

`catalogue` reads and checks the catalogue of bundles; `bundles` reports each bundle's
status and the models' disk use, submits install/uninstall jobs and runs them in a worker.
"""
