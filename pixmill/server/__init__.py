"""The Flask app: factory, one blueprint per resource, errors, OpenAPI."""
