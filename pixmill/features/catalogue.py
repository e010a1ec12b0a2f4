"""The feature-bundle catalogue: which bundles can be installed, and what each one needs.

A bundle is one plugin package (a pip requirement) plus the model files its plugins load,
described in a small JSON file shipped with pixmill (`catalogue.json` beside this module) or
named by `PIXMILL_FEATURES_CATALOGUE`. The file is checked whole by `CatalogueSchema` when it
is loaded: a bad catalogue is an operator's mistake and is reported with every field that is
wrong, never half-used.

Model files are fetched only from the catalogue itself: an `https://`, `http://` or
`file://` URL, or a `resource` inside an installed Python package (`package:path/in/it`).
Each one has its size and sha256 in the catalogue, and is kept only if both match.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from pixmill.core.errors import PixmillError
from pixmill.core.plugin_host import BUILTIN_PACKAGE

CATALOGUE_VERSION = 1
SHIPPED_CATALOGUE = "catalogue.json"
# Ids end up in URLs, job rows and directory names under the models dir.
BUNDLE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# A model's name is a file name in its bundle's directory: no separators, no leading dot.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
URL_SCHEMES = ("https", "http", "file")
# A distribution name as pip spells it (PEP 508 names).
DISTRIBUTION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str
    size: int
    url: str | None = None
    resource: str | None = None

    @property
    def origin(self) -> str:
        return self.url or f"resource {self.resource}"


@dataclass(frozen=True)
class Bundle:
    id: str
    name: str
    description: str
    package: str  # what pip installs: a name, a pinned requirement, a path or a URL
    distribution: str  # the installed distribution's name, by which its status is found
    plugins: tuple[str, ...]
    models: tuple[ModelFile, ...]
    size_estimate: int


class ModelSchema(Schema):
    name = fields.String(required=True, validate=validate.Regexp(MODEL_NAME))
    url = fields.String(load_default=None)
    resource = fields.String(load_default=None)
    sha256 = fields.String(required=True, validate=validate.Regexp(SHA256))
    size = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))

    @validates_schema
    def _one_origin(self, data: dict[str, Any], **_: Any) -> None:
        url, resource = data.get("url"), data.get("resource")
        if (url is None) == (resource is None):
            raise ValidationError("give exactly one of url or resource", "url")
        if url is not None and urlsplit(url).scheme not in URL_SCHEMES:
            raise ValidationError(f"a model URL is one of {', '.join(URL_SCHEMES)}", "url")
        if resource is not None:
            package, _, path = resource.partition(":")
            if not package or not path or ".." in Path(path).parts:
                raise ValidationError("a resource is package:path/inside/it", "resource")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ModelFile:
        return ModelFile(**data)


class BundleSchema(Schema):
    id = fields.String(required=True, validate=validate.Regexp(BUNDLE_ID))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(required=True)
    package = fields.String(required=True, validate=validate.Length(min=1))
    distribution = fields.String(load_default=None, validate=validate.Regexp(DISTRIBUTION))
    plugins = fields.List(fields.String(validate=validate.Length(min=1)), required=True)
    models = fields.List(fields.Nested(ModelSchema), load_default=list)
    size_estimate = fields.Integer(
        data_key="sizeEstimate", required=True, strict=True, validate=validate.Range(min=0)
    )

    @validates_schema
    def _names(self, data: dict[str, Any], **_: Any) -> None:
        distribution = data.get("distribution") or data.get("package", "")
        if not DISTRIBUTION.match(distribution):
            raise ValidationError(
                "package is not a plain distribution name: give the installed distribution's "
                "name in `distribution`",
                "distribution",
            )
        if _canonical(distribution) == BUILTIN_PACKAGE:
            raise ValidationError("pixmill itself is not a bundle", "distribution")
        names = [model.name for model in data.get("models", [])]
        if len(names) != len(set(names)):
            raise ValidationError("two model files have the same name", "models")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Bundle:
        return Bundle(
            id=data["id"],
            name=data["name"],
            description=data["description"],
            package=data["package"],
            distribution=data["distribution"] or data["package"],
            plugins=tuple(data["plugins"]),
            models=tuple(data["models"]),
            size_estimate=data["size_estimate"],
        )


class CatalogueSchema(Schema):
    version = fields.Integer(required=True, strict=True, validate=validate.Equal(CATALOGUE_VERSION))
    bundles = fields.List(fields.Nested(BundleSchema), required=True)

    @validates_schema
    def _unique(self, data: dict[str, Any], **_: Any) -> None:
        ids = [bundle.id for bundle in data.get("bundles", [])]
        duplicates = sorted({bundle_id for bundle_id in ids if ids.count(bundle_id) > 1})
        if duplicates:
            raise ValidationError(f"bundle ids used twice: {', '.join(duplicates)}", "bundles")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class CatalogueError(PixmillError):
    """The catalogue file is missing or wrong: the server's configuration, hence a 500."""

    code = "FEATURES_CATALOGUE_INVALID"
    status = 500


def load_catalogue(path: Path | None = None) -> dict[str, Bundle]:
    """The bundles of the catalogue at `path` (default: the one shipped with pixmill), by id,
    in the file's order. `CatalogueError` names the file and every invalid field."""
    where = str(path) if path is not None else f"pixmill/features/{SHIPPED_CATALOGUE}"
    try:
        if path is None:
            text = resources.files(__package__).joinpath(SHIPPED_CATALOGUE).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        raw = json.loads(text)
    except (OSError, ValueError) as error:
        raise CatalogueError(f"cannot read the feature catalogue {where}: {error}") from error
    try:
        loaded = CatalogueSchema().load(raw)
    except ValidationError as error:
        raise CatalogueError(
            f"the feature catalogue {where} is invalid",
            details={"file": where, "fields": error.messages},
        ) from error
    return {bundle.id: bundle for bundle in loaded["bundles"]}
