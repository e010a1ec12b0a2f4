"""The conformance check: does a plugin behave the way pixmill and its users rely on?

One line for a plugin author::

    from pixmill.testing import check_plugin
    check_plugin(my_plugin_module).assert_ok()

(`pixmill plugin check PATH_OR_NAME` runs the same from a shell.) For every tool, extractor and
source the plugin declares it checks that

- it loads: a valid id, a sound definition, no id clash (the plugin host's own checks);
- its settings schema's defaults (or its `example`) load and the schema exports as JSON Schema;
- bad settings are refused with `VALIDATION_ERROR`: an unknown field, a wrong type for each
  field, and a value out of each declared `Range`, `Length` or `OneOf`;
- (tools and extractors) it runs on every sample image kind without crashing: a clean refusal
  (any `PixmillError` below 500, such as 422 `ANIMATED_IMAGE_UNSUPPORTED`) counts as handled,
  an unexpected exception or an unreadable result is a failure;
- it is deterministic for the same input and settings, unless it declares `cacheable=False`
  (pixmill reuses stored results of cacheable calls, so a non-deterministic tool would serve
  stale randomness);
- a `heavy=True` tool or extractor reports progress (`ctx.progress`) as it runs, since heavy
  work is always queued and clients watch its progress.

Sources are checked for their declaration and settings but not fetched: fetching reaches
outside the process (a network, a folder), which a check must not depend on.

Every failure names the definition, the check, what happened and how to fix it.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from marshmallow import Schema, fields, validate

from pixmill.core.config import Config
from pixmill.core.contracts import Extractor, FileInput, OutputKind, Source, Tool
from pixmill.core.errors import PixmillError
from pixmill.core.execution import Outcome, execute
from pixmill.core.plugin_host import Registry
from pixmill.core.settings import schema_instance, to_json_schema, validate_settings
from pixmill.testing import images
from pixmill.testing.harness import PluginSpec, plugins_from, registry_for

UNKNOWN_FIELD = "pixmillConformanceUnknownField"
# Enough runs to catch randomness without running every sample twice.
DETERMINISM_SAMPLES = ("photo-jpeg", "alpha-png")


@dataclass(frozen=True)
class Finding:
    """The result of one check on one definition (or on the plugin as a whole)."""

    subject: str
    check: str
    ok: bool
    message: str = ""
    fix: str = ""

    def lines(self) -> list[str]:
        status = "ok  " if self.ok else "FAIL"
        head = f"  {status} {self.subject}: {self.check}"
        if self.ok:
            return [head + (f" ({self.message})" if self.message else "")]
        result = [head, f"         what happened: {self.message}"]
        if self.fix:
            result.append(f"         how to fix:    {self.fix}")
        return result


class ConformanceError(AssertionError):
    """Raised by `ConformanceReport.assert_ok`; its message is the readable report."""


@dataclass
class ConformanceReport:
    target: str
    findings: list[Finding] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    extractors: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.findings) and not self.failures

    @property
    def failures(self) -> list[Finding]:
        return [finding for finding in self.findings if not finding.ok]

    def text(self, verbose: bool = True) -> str:
        provided = (
            f"{len(self.tools)} tool(s), {len(self.extractors)} extractor(s), "
            f"{len(self.sources)} source(s)"
        )
        lines = [f"pixmill conformance check of {self.target}: {provided}"]
        for finding in self.findings:
            if verbose or not finding.ok:
                lines.extend(finding.lines())
        passed = len(self.findings) - len(self.failures)
        verdict = "PASSED" if self.ok else "FAILED"
        lines.append(f"{verdict}: {passed} check(s) passed, {len(self.failures)} failed")
        return "\n".join(lines)

    def assert_ok(self) -> ConformanceReport:
        if not self.ok:
            raise ConformanceError("\n" + self.text(verbose=False))
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "tools": self.tools,
            "extractors": self.extractors,
            "sources": self.sources,
            "findings": [finding.__dict__ for finding in self.findings],
        }


def check_plugin(
    plugin: PluginSpec | Path | Sequence[PluginSpec | Path],
    *,
    samples: Mapping[str, bytes] | None = None,
) -> ConformanceReport:
    """Check a plugin: a module or object with hook implementations, the path of a module
    or directory, or an installed plugin's entry-point or distribution name (a list of any
    of these checks them together). Returns the report; `.assert_ok()` fails on problems."""
    items = list(plugin) if isinstance(plugin, list | tuple) else [plugin]
    report = ConformanceReport(target=", ".join(_describe(item) for item in items))
    try:
        registry = registry_for(plugins_from(items))
    except PixmillError as exc:
        report.findings.append(
            Finding("plugin", "is found", False, exc.message, "check the name or path")
        )
        return report
    with tempfile.TemporaryDirectory(prefix="pixmill-conformance-") as scratch:
        checker = _Checker(registry, report, Config(data_dir=Path(scratch)), samples)
        checker.run()
    return report


def assert_conforms(
    plugin: PluginSpec | Path | Sequence[PluginSpec | Path],
    *,
    samples: Mapping[str, bytes] | None = None,
) -> ConformanceReport:
    """`check_plugin(...).assert_ok()`: the one line for a plugin's own test suite."""
    return check_plugin(plugin, samples=samples).assert_ok()


def _describe(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Path):
        return str(item)
    return str(getattr(item, "__name__", type(item).__name__))


class _Checker:
    def __init__(
        self,
        registry: Registry,
        report: ConformanceReport,
        config: Config,
        samples: Mapping[str, bytes] | None,
    ) -> None:
        self.registry = registry
        self.report = report
        self.config = config
        self.samples = dict(samples) if samples is not None else images.sample_images()

    def add(self, subject: str, check: str, ok: bool, message: str = "", fix: str = "") -> None:
        self.report.findings.append(Finding(subject, check, ok, message, fix))

    def run(self) -> None:
        self.check_loading()
        for tool in self.registry.tools.values():
            self.report.tools.append(tool.id)
            self.check_definition(tool)
        for extractor in self.registry.extractors.values():
            self.report.extractors.append(extractor.id)
            self.check_definition(extractor)
        for source in self.registry.sources.values():
            self.report.sources.append(source.id)
            self.check_definition(source)

    def check_loading(self) -> None:
        if not self.registry.plugins:
            self.add(
                "plugin",
                "is found",
                False,
                "nothing to check: no plugin was loaded",
                "pass a module with @pixmill.hookimpl functions, or an installed plugin's name",
            )
        for info in self.registry.plugins:
            subject = f"plugin {info.name!r}"
            for error in info.errors:
                self.add(
                    subject,
                    "loads",
                    False,
                    error,
                    "the message above says what to change; see docs/plugins/testing.md",
                )
            if info.loaded and not info.errors:
                self.add(subject, "loads", True, ", ".join(info.hooks))
            if info.loaded and not (info.tools or info.extractors or info.sources):
                self.add(
                    subject,
                    "provides something",
                    False,
                    "it declares no tool, extractor or source",
                    "return a list of pixmill.Tool (or Extractor, Source) from a "
                    "@hookimpl pixmill_tools (pixmill_extractors, pixmill_sources) function",
                )

    # ----- per definition -------------------------------------------------------------------

    def check_definition(self, definition: Tool | Extractor | Source) -> None:
        subject = f"{definition.kind.value} {definition.id!r}"
        baseline = self.check_schema(subject, definition)
        if baseline is None:
            return
        self.check_bad_settings(subject, definition, baseline)
        if isinstance(definition, Tool | Extractor):
            self.check_runs(subject, definition, baseline)

    def check_schema(
        self, subject: str, definition: Tool | Extractor | Source
    ) -> dict[str, Any] | None:
        """The settings the runs use (the example, else the defaults), or None when the
        schema cannot even load them."""
        try:
            to_json_schema(definition.settings)
        except Exception as exc:
            self.add(
                subject,
                "settings export as JSON Schema",
                False,
                f"{type(exc).__name__}: {exc}",
                "use marshmallow field types apispec knows, or register the custom field",
            )
            return None
        self.add(subject, "settings export as JSON Schema", True)
        baseline = dict(definition.example)
        try:
            validate_settings(definition.settings, baseline)
        except PixmillError as exc:
            self.add(
                subject,
                "default settings load",
                False,
                f"{'its example' if baseline else 'an empty settings object'} is refused: "
                f"{exc.message}",
                "give every field a load_default, or declare example settings "
                "(Tool(example={...})) that a caller can start from",
            )
            return None
        self.add(subject, "default settings load", True)
        return baseline

    def check_bad_settings(
        self, subject: str, definition: Tool | Extractor | Source, baseline: dict[str, Any]
    ) -> None:
        cases = [("an unknown field", {**baseline, UNKNOWN_FIELD: 1}, UNKNOWN_FIELD)]
        cases.extend(bad_values(definition.settings, baseline))
        accepted = []
        for description, raw, wire_name in cases:
            try:
                validate_settings(definition.settings, raw)
            except PixmillError as exc:
                if exc.code != "VALIDATION_ERROR" or exc.status != 400:
                    accepted.append(f"{description} gave {exc.status} {exc.code}")
                    continue
                named = exc.details.get("fields", {})
                if wire_name not in named:
                    accepted.append(
                        f"{description} was refused but the error names "
                        f"{sorted(named)} instead of {wire_name!r}"
                    )
            except Exception as exc:
                accepted.append(f"{description} crashed the schema: {type(exc).__name__}: {exc}")
            else:
                accepted.append(f"{description} ({wire_name}={raw.get(wire_name)!r}) was accepted")
        if accepted:
            self.add(
                subject,
                "rejects bad settings with VALIDATION_ERROR",
                False,
                "; ".join(accepted),
                "derive the settings schema from pixmill.Settings (it refuses unknown "
                "fields) and give fields a type and validate=Range/Length/OneOf bounds",
            )
        else:
            self.add(
                subject,
                "rejects bad settings with VALIDATION_ERROR",
                True,
                f"{len(cases)} bad value(s)",
            )

    def check_runs(
        self, subject: str, definition: Tool | Extractor, baseline: dict[str, Any]
    ) -> None:
        progress_calls = 0
        crashes: list[str] = []
        refused: list[str] = []
        first_outputs: dict[str, Outcome] = {}

        def count_progress(_fraction: float, _message: str | None) -> None:
            nonlocal progress_calls
            progress_calls += 1

        for kind, data in {**self.samples, **document_samples(definition)}.items():
            outcome, problem = self.run_once(definition, kind, data, baseline, count_progress)
            if problem is not None:
                crashes.append(problem)
            elif isinstance(outcome, PixmillError):
                refused.append(f"{kind}: {outcome.status} {outcome.code}")
            elif outcome is not None:
                first_outputs[kind] = outcome
        if crashes:
            self.add(
                subject,
                "runs on every sample image kind",
                False,
                "; ".join(crashes),
                "handle the input or refuse it cleanly by raising a pixmill error (e.g. "
                "pixmill.core.errors.AnimatedImageError, UnsupportedFormatError, "
                "BadRequestError) with a message saying what the caller should send",
            )
        else:
            note = f"{len(first_outputs)} ran" + (
                f", refused cleanly: {', '.join(refused)}" if refused else ""
            )
            self.add(subject, "runs on every sample image kind", True, note)
        if not first_outputs:
            return
        self.check_determinism(subject, definition, baseline, first_outputs)
        if definition.heavy:
            if progress_calls:
                self.add(subject, "reports progress (heavy)", True)
            else:
                self.add(
                    subject,
                    "reports progress (heavy)",
                    False,
                    f"it is declared heavy=True but never called ctx.progress on "
                    f"{', '.join(first_outputs)}",
                    "call ctx.progress(fraction, message) as the work advances (heavy work "
                    "is always queued and clients watch its progress), or drop heavy=True",
                )

    def run_once(
        self,
        definition: Tool | Extractor,
        kind: str,
        data: bytes,
        settings: Mapping[str, Any],
        on_progress: Callable[[float, str | None], None] | None = None,
    ) -> tuple[Outcome | PixmillError | None, str | None]:
        """(outcome or clean refusal, None), or (None, what went wrong)."""
        documents = {kind: name for kind, name in images.DOCUMENT_SAMPLES.values()}
        filename = images.SAMPLE_FILENAMES.get(kind) or documents.get(kind, f"{kind}.img")
        main = [(data, filename)]
        if takes_many(definition):
            # A multi-file tool (collage, find-duplicates) gets the sample and a second image.
            main.append((images.png(64, 48), "second.png"))
        parts = {"file": main, **extra_inputs(definition)}
        try:
            outcome = execute(
                definition,
                parts,
                settings,
                limits=self.config.limits,
                config=self.config.plugin_config(),
                on_progress=on_progress,
            )
        except PixmillError as exc:
            if exc.status >= 500:
                return None, f"{kind}: {exc.code}: {exc.message}"
            return exc, None
        except Exception as exc:  # execute wraps plugin errors; this would be a pixmill bug
            return None, f"{kind}: {type(exc).__name__}: {exc}"
        return outcome, result_problem(kind, outcome)

    def check_determinism(
        self,
        subject: str,
        definition: Tool | Extractor,
        baseline: dict[str, Any],
        first_outputs: Mapping[str, Outcome],
    ) -> None:
        if not definition.cacheable:
            self.add(subject, "deterministic", True, "declares cacheable=False; not required")
            return
        kinds = [kind for kind in DETERMINISM_SAMPLES if kind in first_outputs] or [
            next(iter(first_outputs))
        ]
        differing = []
        for kind in kinds:
            data = self.samples.get(kind) or document_samples(definition)[kind]
            again, problem = self.run_once(definition, kind, data, baseline)
            if problem is not None or not isinstance(again, Outcome):
                differing.append(f"{kind}: the second run failed ({problem or again})")
            elif fingerprint(again) != fingerprint(first_outputs[kind]):
                differing.append(f"{kind}: two runs gave different output")
        if differing:
            self.add(
                subject,
                "deterministic",
                False,
                f"same input and settings {baseline or '{}'}: " + "; ".join(differing),
                "derive any randomness from the input and settings (e.g. a seed setting), or "
                "declare cacheable=False so pixmill never reuses a stored result",
            )
        else:
            self.add(subject, "deterministic", True, ", ".join(kinds))


def fingerprint(outcome: Outcome) -> Any:
    if outcome.kind is OutputKind.JSON:
        return json.dumps(outcome.json, sort_keys=True, default=str)
    return outcome.data


def result_problem(kind: str, outcome: Outcome) -> str | None:
    """Why a successful run's result is unusable, or None."""
    if outcome.kind is OutputKind.JSON:
        try:
            json.dumps(outcome.json)
        except (TypeError, ValueError) as exc:
            return f"{kind}: the result is not JSON-serialisable ({exc}); return plain values"
        return None
    if not outcome.data:
        return f"{kind}: the result is empty"
    if outcome.kind is OutputKind.FILE:
        return document_problem(kind, outcome)
    try:
        images.decode(outcome.data)
    except Exception as exc:
        return f"{kind}: the result is not a readable image ({type(exc).__name__}: {exc})"
    return None


def document_samples(definition: Tool | Extractor) -> dict[str, bytes]:
    """A sample of each document format (PDF, SVG) the main part takes besides images."""
    declared: Iterable[FileInput] = definition.inputs if isinstance(definition, Tool) else ()
    formats = [fmt for spec in declared if spec.name == "file" for fmt in spec.documents]
    return {images.DOCUMENT_SAMPLES[fmt][0]: images.document_sample(fmt) for fmt in formats}


def takes_many(definition: Tool | Extractor) -> bool:
    declared: Iterable[FileInput] = definition.inputs if isinstance(definition, Tool) else ()
    return any(spec.name == "file" and spec.multiple for spec in declared)


def extra_inputs(definition: Tool | Extractor) -> dict[str, list[tuple[bytes, str]]]:
    """A sample for each required file part besides the main one (a watermark, a mask)."""
    declared: Iterable[FileInput] = definition.inputs if isinstance(definition, Tool) else ()
    return {
        spec.name: [(images.png(64, 48), f"{spec.name}.png")]
        for spec in declared
        if spec.name != "file" and spec.required
    }


def bad_values(
    schema_cls: type[Schema], baseline: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any], str]]:
    """(description, raw settings, wire name) for each bad value the schema should refuse:
    one of the wrong type per field, and ones outside each declared bound."""
    cases: list[tuple[str, dict[str, Any], str]] = []
    for name, field_obj in schema_instance(schema_cls).load_fields.items():
        wire = field_obj.data_key or name
        wrong = wrong_type_value(field_obj)
        if wrong is not _NO_VALUE:
            cases.append((f"a wrong type for {wire!r}", {**baseline, wire: wrong}, wire))
        for label, value in out_of_bounds_values(field_obj):
            cases.append((f"{label} for {wire!r}", {**baseline, wire: value}, wire))
    return cases


_NO_VALUE = object()


def wrong_type_value(field_obj: fields.Field) -> Any:
    """A value of a type the field cannot take, or `_NO_VALUE` when it takes anything."""
    if isinstance(field_obj, fields.Boolean):
        return "not-a-boolean"
    if isinstance(field_obj, fields.Number):
        return "not-a-number"
    if isinstance(field_obj, fields.String | fields.UUID | fields.Enum):
        return ["not", "a", "string"]
    if isinstance(field_obj, fields.List | fields.Tuple):
        return "not-a-list"
    if isinstance(field_obj, fields.Nested | fields.Dict | fields.Mapping):
        return "not-an-object"
    if isinstance(field_obj, fields.DateTime | fields.Date | fields.Time | fields.TimeDelta):
        return "not-a-date"
    return _NO_VALUE


def out_of_bounds_values(field_obj: fields.Field) -> list[tuple[str, Any]]:
    values: list[tuple[str, Any]] = []
    for validator in field_obj.validators:
        if isinstance(validator, validate.Range):
            if not all(
                bound is None or isinstance(bound, int | float)
                for bound in (validator.min, validator.max)
            ):
                continue  # a date or decimal range: no generic value outside it
            if validator.min is not None:
                values.append((f"below the minimum {validator.min}", validator.min - 1))
            if validator.max is not None:
                values.append((f"above the maximum {validator.max}", validator.max + 1))
        elif isinstance(validator, validate.Length) and isinstance(field_obj, fields.String):
            if validator.max is not None:
                values.append((f"longer than {validator.max}", "x" * (validator.max + 1)))
            if validator.min:
                values.append((f"shorter than {validator.min}", ""))
        elif isinstance(validator, validate.OneOf) and isinstance(field_obj, fields.String):
            choices = {str(choice) for choice in validator.choices}
            values.append(("a value not among its choices", _not_in(choices)))
    return values


def _not_in(choices: set[str]) -> str:
    candidate = "not-a-choice"
    while candidate in choices:
        candidate += "-really"
    return candidate


def document_problem(kind: str, outcome: Outcome) -> str | None:
    """Why a document result (ZIP, PDF, SVG, JSON) does not hold what its format says."""
    assert outcome.data is not None and outcome.format is not None
    data, name = outcome.data, outcome.format.name
    try:
        if name == "zip":
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                broken = archive.testzip()
                if broken is not None or not archive.namelist():
                    return f"{kind}: the ZIP is empty or its member {broken!r} is corrupt"
        elif name == "pdf" and not (data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]):
            return f"{kind}: the result is not a complete PDF"
        elif name == "svg":
            root = ElementTree.fromstring(data)
            if not root.tag.endswith("svg"):
                return f"{kind}: the SVG's root element is <{root.tag}>, not <svg>"
        elif name == "json":
            json.loads(data)
    except (zipfile.BadZipFile, ElementTree.ParseError, ValueError) as exc:
        return f"{kind}: the result is not a readable {name} ({type(exc).__name__}: {exc})"
    return None
