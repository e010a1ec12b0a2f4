"""Feature bundles over REST (seed 003): the catalogue with each bundle's install status, and
the admin routes that install and uninstall bundles as jobs and report the models' disk use.

- `GET /api/v1/features`: every bundle of the catalogue (`pixmill.features`) with its status
  (`installed`, `available`, `broken`), installed version, model files, problems, whether a
  restart is needed to load it, and the id of a job of it still running.
- `POST /api/v1/admin/features/<bundleId>/install` and `.../uninstall`: 202 with the job
  (`accepted_response`), followed like any job (`statusUrl`, `progressUrl`). 404
  `BUNDLE_NOT_FOUND`; 409 `BUNDLE_INSTALLED` (install twice: refused rather than a silent
  no-op, so that a client does not take an old install for a fresh one),
  `BUNDLE_NOT_INSTALLED`, `FEATURE_JOB_RUNNING`.
- `GET /api/v1/admin/features/disk-usage`: bytes under `<data_dir>/models`, in total and per
  bundle.

The admin routes change the server's Python environment, so they answer 403
`ADMIN_DISABLED` unless `PIXMILL_ENABLE_ADMIN=1`: there is no authentication yet to reserve
them to administrators. Listing the bundles is harmless and always allowed.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from pixmill.core.errors import PixmillError
from pixmill.features.bundles import (
    bundle_status,
    catalogue_of,
    disk_usage,
    submit_feature_job,
    unfinished_job,
)
from pixmill.server.state import get_state
from pixmill.server.tools import accepted_response

bp = Blueprint("features", __name__, url_prefix="/api/v1")
# Nested in `bp` (one blueprint for the app to register); its gate applies to it alone.
admin_bp = Blueprint("admin_features", __name__, url_prefix="/admin/features")


@bp.get("/features")
def list_features() -> Response:
    state = get_state()
    bundles = [
        bundle_status(bundle, state.config, state.registry, unfinished_job(state.jobs, bundle.id))
        for bundle in catalogue_of(state.config).values()
    ]
    return jsonify({"features": bundles, "total": len(bundles)})


@admin_bp.before_request
def _require_admin() -> None:
    if not get_state().config.enable_admin:
        raise PixmillError(
            "the admin routes are disabled: set PIXMILL_ENABLE_ADMIN=1 to enable them (they "
            "change the server's Python environment, and no authentication guards them yet)",
            code="ADMIN_DISABLED",
            status=403,
        )


@admin_bp.post("/<bundle_id>/install")
def install_feature(bundle_id: str) -> Response:
    job = submit_feature_job(get_state().dispatcher, bundle_id, "install")
    return accepted_response(job.id, str(job.status))


@admin_bp.post("/<bundle_id>/uninstall")
def uninstall_feature(bundle_id: str) -> Response:
    job = submit_feature_job(get_state().dispatcher, bundle_id, "uninstall")
    return accepted_response(job.id, str(job.status))


@admin_bp.get("/disk-usage")
def features_disk_usage() -> Response:
    return jsonify(disk_usage(get_state().config))


bp.register_blueprint(admin_bp)
