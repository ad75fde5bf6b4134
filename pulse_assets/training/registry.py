"""The plan's PulseModelRegistry on MLflow: versions, aliases ``champion``/``challenger``, lineage.

Aliases replace MLflow's deprecated stages. Lineage follows the ``parent_version`` tag
(the champion a version retrained), walked iteratively both ways.

A version's files are data only (``training/model_files.py``: safetensors weights and a JSON
card), logged as artifacts of the training run under ``model/`` and registered with that
folder as the version's source. Loading downloads those two files and nothing else: no
pickle, no ``mlflow.pytorch``, so whoever can write the artifact store cannot run code in the
assets and sensors that load the champion.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from pulse_assets.errors import NoChampionError, PulseError
from pulse_assets.storage.sql import write_ahead_log
from pulse_assets.training.audit import AliasAudit, AliasEvent, now
from pulse_assets.training.model_files import MODEL_FILES, ModelFileError, read_model, write_model
from pulse_assets.training.models import ForecastModule

CHAMPION, CHALLENGER = "champion", "challenger"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
MODEL_ARTIFACT_PATH = "model"
UNIFORM_TWIN_PATH = "uniform_twin"  # beside model/: the uniform-weight twin's files
NOTE_TAG = "mlflow.note.content"  # the run's description in MLflow's UI
DIGEST_LENGTH = 32  # MLflow's dataset digest column holds 36 characters
MLFLOW_COLUMN_TYPES = {
    "Float64": "double",
    "Float32": "float",
    "Int64": "long",
    "Int32": "integer",
    "Boolean": "boolean",
    "String": "string",
    "Date": "datetime",
    "Datetime": "datetime",
}
T = TypeVar("T")


class TrackingError(PulseError):
    """The MLflow tracking server or registry could not be used."""


@dataclass(frozen=True)
class ModelVersionInfo:
    version: str
    run_id: str | None
    tags: dict[str, str]
    aliases: tuple[str, ...]


class VersionTagError(PulseError):
    """A model version lacks a tag every reader needs (it was made by an older release)."""


@dataclass(frozen=True)
class VersionTags:
    """What a version was trained on, as typed values: the one place that writes and reads
    these tags. ``cutoff`` is the first day the training could not see (the round's start
    when history is replayed); ``train_first``..``train_last`` are its training rows' days."""

    round: str
    cutoff: date
    train_first: date
    train_last: date
    training_id: str
    trigger: str
    parent_version: str | None = None
    warm_start_from: str | None = None
    data_versions: str = ""
    dagster_run_id: str = ""
    drifted_features: tuple[str, ...] = ()
    curriculum_weighted: bool = False  # trained with non-uniform curriculum row weights
    uniform_twin: bool = False  # its run holds the twin trained with uniform weights

    def to_tags(self) -> dict[str, str]:
        return {
            "round": self.round,
            "cutoff": self.cutoff.isoformat(),
            "train_first": self.train_first.isoformat(),
            "train_last": self.train_last.isoformat(),
            "training_id": self.training_id,
            "trigger": self.trigger,
            "parent_version": self.parent_version or "",
            "warm_start_from": self.warm_start_from or "",
            "data_versions": self.data_versions,
            "dagster_run_id": self.dagster_run_id,
            "drifted_features": ",".join(self.drifted_features),
            "curriculum_weighted": str(self.curriculum_weighted).lower(),
            "uniform_twin": str(self.uniform_twin).lower(),
        }

    @classmethod
    def of(cls, info: ModelVersionInfo) -> VersionTags:
        tags = info.tags
        needed = ("round", "cutoff", "train_first", "train_last", "training_id", "trigger")
        missing = [name for name in needed if not tags.get(name)]
        if missing:
            raise VersionTagError(
                f"model version {info.version} has no tag(s) {missing}: it was registered by an "
                "older release; retrain (materialize models/forecast_model for a round)"
            )
        return cls(
            round=tags["round"],
            cutoff=date.fromisoformat(tags["cutoff"]),
            train_first=date.fromisoformat(tags["train_first"]),
            train_last=date.fromisoformat(tags["train_last"]),
            training_id=tags["training_id"],
            trigger=tags["trigger"],
            parent_version=tags.get("parent_version") or None,
            warm_start_from=tags.get("warm_start_from") or None,
            data_versions=tags.get("data_versions", ""),
            dagster_run_id=tags.get("dagster_run_id", ""),
            drifted_features=tuple(f for f in tags.get("drifted_features", "").split(",") if f),
            curriculum_weighted=tags.get("curriculum_weighted") == "true",
            uniform_twin=tags.get("uniform_twin") == "true",
        )


@dataclass(frozen=True)
class TrainingRecord:
    """What one training logs: params, per-epoch losses, data and config (the model apart),
    the run's name and the description of the run and its version."""

    params: dict[str, Any]
    losses: dict[str, list[tuple[int, float]]]
    dataset: DatasetCard
    config: dict[str, Any]
    version_tags: dict[str, str]
    run_name: str
    description: str


@dataclass(frozen=True)
class DatasetCard:
    """The training rows as MLflow shows them under the run's inputs: name, content digest,
    schema and size. Described from what the round already knows (its fingerprint), so logging
    does not hash and profile the rows a second time."""

    name: str
    digest: str
    rows: int
    schema: dict[str, str]
    tags: dict[str, str]

    def to_input(self) -> DatasetInput:
        columns = [
            {"name": name, "type": MLFLOW_COLUMN_TYPES.get(dtype, "string")}
            for name, dtype in self.schema.items()
        ]
        dataset = Dataset(
            name=self.name,
            digest=self.digest[:DIGEST_LENGTH],
            source_type="pulse-store",
            source=json.dumps({"table": "features/daily_features", "name": self.name}),
            schema=json.dumps({"mlflow_colspec": columns}),
            profile=json.dumps({"num_rows": self.rows}),
        )
        tags = [InputTag("mlflow.data.context", "training")]
        return DatasetInput(dataset, tags + [InputTag(k, v) for k, v in self.tags.items()])


class ModelRegistry:
    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        experiment: str,
        artifacts_uri: str,
        audit: AliasAudit,
        retries: int = 2,
        timeout_s: float = 10.0,
    ) -> None:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(1, timeout_s)))
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        # MLflow 3 records every client call for its usage telemetry (and would send it
        # out); a platform that runs without network sends nothing unless its operator sets
        # MLFLOW_DISABLE_TELEMETRY=false
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        if tracking_uri.startswith("sqlite:"):
            write_ahead_log(tracking_uri)
        self._mlflow = mlflow
        self.client = mlflow.MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        # a password in the URI (http://user:password@host) never goes into an error
        password = urlsplit(tracking_uri).password
        self._passwords = {password, unquote(password)} if password else set()
        self._shown_uri = self._redact(tracking_uri)
        self.model_name = model_name
        self.experiment = experiment
        self.artifacts_uri = artifacts_uri
        self.audit = audit
        self.retries = retries
        self._registered = False
        self._experiment_id: str | None = None
        self._first_seen: dict[str, ModelVersionInfo] = {}  # for what never changes: run, tags

    @property
    def _model_versions(self) -> Any:
        """MLflow's registry client, for writes to this registry's own model versions.

        ``MlflowClient`` first checks that the name is not a prompt, reading the whole
        registered model (most of a tag write's time, and it grows with the versions); this
        registry created the model itself, so the check never fails here."""
        return self.client._get_registry_client()

    def _redact(self, text: str) -> str:
        for password in self._passwords:
            text = text.replace(password, "***")
        return text

    def _call(self, what: str, action: Callable[[], T]) -> T:
        """Run a tracking call, retrying connection failures, then failing with what to do.

        MLflow's own error names the request's URL, password included when the tracking URI
        carries one: the message is then redacted and the cause left unchained."""
        for attempt in range(self.retries + 1):
            try:
                return action()
            except MlflowException as error:
                text = self._redact(str(error))
                cause = None if self._passwords else error
                unreachable = "connect" in text.lower() or "max retries" in text.lower()
                if not unreachable:
                    raise TrackingError(
                        f"MLflow at {self._shown_uri}: {what} failed: {text}"
                    ) from cause
                if attempt == self.retries:
                    raise TrackingError(
                        f"MLflow tracking server at {self._shown_uri} is unreachable ({what}, "
                        f"{self.retries + 1} attempts): {text[:300]}. Start the server or unset "
                        "MLFLOW_TRACKING_URI to use the local sqlite store"
                    ) from cause
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable: the loop returns or raises")

    def experiment_id(self) -> str:
        """The experiment's id, created at first use; looked up once per registry."""
        if self._experiment_id is None:
            found = self._call(
                "get experiment", lambda: self.client.get_experiment_by_name(self.experiment)
            )
            self._experiment_id = (
                found.experiment_id
                if found is not None
                else self._call(
                    "create experiment",
                    lambda: self.client.create_experiment(
                        self.experiment,
                        artifact_location=f"{self.artifacts_uri}/{self.experiment}",
                    ),
                )
            )
        return self._experiment_id

    @contextlib.contextmanager
    def _fluent(self) -> Iterator[Any]:
        """MLflow's run API pointed at this registry's server, for the duration only.

        ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which outranks the
        configured URI (see ``pulse_assets.config.tracking_uri``); left set, it would send every
        later registry in the process, and its child processes, to this server.
        """
        exported = os.environ.get(TRACKING_URI_ENV)
        self._mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield self._mlflow
        finally:
            if exported is None:
                os.environ.pop(TRACKING_URI_ENV, None)
            else:
                os.environ[TRACKING_URI_ENV] = exported

    def log_training(
        self,
        record: TrainingRecord,
        module: ForecastModule,
        uniform_twin: ForecastModule | None = None,
    ) -> ModelVersionInfo:
        """One MLflow run with everything about a training, and a new registered version;
        ``uniform_twin`` (the same training with uniform row weights) is logged beside the model.

        Params, per-epoch losses and the run's tags go in one batch, the model files and the
        config in one artifact upload: each tracking call is a round trip (a database
        transaction on the local store), and a walk-forward makes one run per round."""
        experiment_id = self.experiment_id()
        run = self._call(
            "create run",
            lambda: self.client.create_run(
                experiment_id, run_name=record.run_name, tags={NOTE_TAG: record.description}
            ),
        )
        run_id = run.info.run_id
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(key, value, stamp, step)
            for key, points in record.losses.items()
            for step, value in points
        ]
        params = [Param(key, str(value)) for key, value in record.params.items()]
        batches = [metrics[start : start + 500] for start in range(0, len(metrics), 500)] or [[]]
        for index, batch in enumerate(batches):
            self._call(
                "log training",
                partial(
                    self.client.log_batch, run_id, metrics=batch, params=[] if index else params
                ),
            )
        self._call(
            "log dataset", lambda: self.client.log_inputs(run_id, [record.dataset.to_input()])
        )
        with tempfile.TemporaryDirectory(prefix="pulse-model-") as folder:
            write_model(module, Path(folder) / MODEL_ARTIFACT_PATH)
            if uniform_twin is not None:
                write_model(uniform_twin, Path(folder) / UNIFORM_TWIN_PATH)
            (Path(folder) / "training_config.json").write_text(json.dumps(record.config, indent=2))
            self._call("log model files", lambda: self.client.log_artifacts(run_id, folder))
        self._call("end run", lambda: self.client.set_terminated(run_id))
        source = f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}"
        self._ensure_registered_model()
        created = self._call(
            "create version",
            lambda: self.client.create_model_version(
                self.model_name,
                source,
                run_id=run_id,
                tags=record.version_tags,
                description=record.description,
            ),
        )
        return self._seen(created)

    def _ensure_registered_model(self) -> None:
        if self._registered:
            return

        def create() -> None:
            try:
                self.client.create_registered_model(self.model_name)
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

        self._call("create registered model", create)
        self._registered = True

    def log_version_metrics(
        self,
        version: str,
        metrics: dict[str, float | None],
        step: int = 0,
        description: str | None = None,
    ) -> None:
        """Metrics on the MLflow run that trained ``version`` (NaN and inf left out), so MLflow
        ranks versions by what they did after training, out of sample; with ``description``,
        the run and the version are described anew (in the same batch for the run)."""
        run_id = self._first_seen_version(version).run_id
        stamp = int(time.time() * 1000)
        finite = [
            Metric(key, float(value), stamp, step)
            for key, value in metrics.items()
            if value is not None and np.isfinite(value)
        ]
        note = [RunTag(NOTE_TAG, description)] if description else []
        if run_id is not None and (finite or note):
            self._call(
                "log version metrics",
                lambda: self.client.log_batch(run_id, metrics=finite, tags=note),
            )
        if description:
            self._call(
                "describe version",
                lambda: self._model_versions.update_model_version(
                    self.model_name, version, description=description
                ),
            )

    def version(self, version: str) -> ModelVersionInfo:
        found = self._call(
            "get version", lambda: self.client.get_model_version(self.model_name, version)
        )
        return self._seen(found)

    def _seen(self, found: Any) -> ModelVersionInfo:
        """``found`` (an MLflow ModelVersion) as ours, remembered as first seen."""
        info = ModelVersionInfo(
            str(found.version), found.run_id, dict(found.tags), tuple(found.aliases)
        )
        self._first_seen.setdefault(info.version, info)
        return info

    def _first_seen_version(self, version: str) -> ModelVersionInfo:
        """The version as this registry first saw it: for its run and the tags it was created
        with (the training tags), which never change; aliases and later tags may have."""
        known = self._first_seen.get(version)
        return known if known is not None else self.version(version)

    def training_id_of(self, version: str) -> str:
        """The training id ``version`` was registered with ('' for an older release's)."""
        return self._first_seen_version(version).tags.get("training_id", "")

    def alias(self, alias: str) -> ModelVersionInfo | None:
        """The version ``alias`` points at, or None when no version has it yet."""

        def fetch() -> Any:
            try:
                return self._model_versions.get_model_version_by_alias(self.model_name, alias)
            except MlflowException as error:
                if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise

        found = self._call(f"get alias {alias}", fetch)
        if found is None:
            return None
        return ModelVersionInfo(
            str(found.version), found.run_id, dict(found.tags), tuple(found.aliases)
        )

    def move_alias(
        self,
        alias: str,
        version: str,
        *,
        actor: str,
        reason: str,
        figures: dict[str, Any],
        run_id: str | None,
        as_of: date | None = None,
    ) -> None:
        """Point ``alias`` at ``version``; record who, when, why, the figures and the simulated
        day the move takes effect (``as_of``), twice: version tags and the audit table."""
        previous = self.alias(alias)
        if previous is None or previous.version != version:
            self._call(
                "set alias",
                lambda: self._model_versions.set_registered_model_alias(
                    self.model_name, alias, version
                ),
            )
        at = now()
        move = {
            "by": actor,
            "at": at.isoformat(),
            "as_of": as_of.isoformat() if as_of else "",
            "figures": figures,
        }
        for key, value in {"reason": reason, "move": json.dumps(move)}.items():
            self._call(
                "tag alias move",
                partial(
                    self._model_versions.set_model_version_tag,
                    self.model_name,
                    version,
                    f"{alias}.{key}",
                    value,
                ),
            )
        self.audit.record(
            AliasEvent(
                model_name=self.model_name,
                alias=alias,
                from_version=previous.version if previous else None,
                to_version=version,
                actor=actor,
                reason=reason,
                figures=figures,
                dagster_run_id=run_id,
                at=at,
                as_of=as_of,
            )
        )

    def load(self, version: str) -> ForecastModule:
        """Rebuild a version from its JSON card and safetensors weights: no code is unpickled."""
        source = self._source(version)
        return self._read_files(source, f"version {version} of model {self.model_name} ({source})")

    def load_uniform_twin(self, version: str) -> ForecastModule:
        """The uniform-weight twin logged beside a curriculum-weighted version (same files,
        same safety); a version without one raises ModelFileError naming it."""
        source = f"{self._source(version).rsplit('/', 1)[0]}/{UNIFORM_TWIN_PATH}"
        return self._read_files(
            source, f"the uniform-weight twin of version {version} of {self.model_name} ({source})"
        )

    def _source(self, version: str) -> str:
        found = self._call(
            "get version", lambda: self.client.get_model_version(self.model_name, version)
        )
        return str(found.source)

    def _read_files(self, source: str, where: str) -> ForecastModule:
        artifacts = self._mlflow.artifacts
        present = self._call(
            f"list {source}",
            lambda: sorted(
                Path(item.path).name
                for item in artifacts.list_artifacts(
                    artifact_uri=source, tracking_uri=self.tracking_uri
                )
            ),
        )
        missing = [name for name in MODEL_FILES if name not in present]
        if missing:
            raise ModelFileError(
                f"{where} has no {', '.join(missing)} (it holds {present or 'nothing'}): it was "
                "logged in another format (earlier releases pickled models, which are no longer "
                "loaded because unpickling can run code) or its files were removed. Retrain: "
                "materialize models/forecast_model"
            )
        with tempfile.TemporaryDirectory(prefix="pulse-model-") as folder:
            for name in MODEL_FILES:
                self._call(
                    f"download {source}/{name}",
                    partial(
                        artifacts.download_artifacts,
                        artifact_uri=f"{source}/{name}",
                        dst_path=folder,
                        tracking_uri=self.tracking_uri,
                    ),
                )
            return read_model(Path(folder), where)

    def log_report(self, name: str, metrics: dict[str, float], files: list[Path]) -> str:
        """An MLflow run named ``name`` with ``metrics`` and ``files`` as artifacts (charts)."""
        finite = {k: v for k, v in metrics.items() if v == v and abs(v) != float("inf")}
        with self._fluent() as mlflow:
            experiment_id = self.experiment_id()
            with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
                self._call("log report metrics", lambda: mlflow.log_metrics(finite))
                for file in files:
                    self._call(f"log {file.name}", partial(mlflow.log_artifact, str(file)))
                return str(run.info.run_id)

    def with_training_id(self, training_id: str) -> ModelVersionInfo | None:
        """The version registered from the same data and config, if any (oldest first)."""
        found = self._call(
            "search versions by training id",
            lambda: self.client.search_model_versions(
                f"name='{self.model_name}' and tags.training_id='{training_id}'"
            ),
        )
        if not found:
            return None
        return self._seen(min(found, key=lambda v: int(v.version)))

    def versions(self) -> list[ModelVersionInfo]:
        """Every version with its tags and aliases (search results carry no aliases: added here)."""
        found = self._call(
            "search versions",
            lambda: self.client.search_model_versions(f"name='{self.model_name}'"),
        )
        if not found:
            return []
        model = self._call("get model", lambda: self.client.get_registered_model(self.model_name))
        aliases: dict[str, list[str]] = {}
        for alias, number in model.aliases.items():
            aliases.setdefault(str(number), []).append(alias)
        infos = [
            ModelVersionInfo(
                str(v.version),
                v.run_id,
                dict(v.tags),
                tuple(sorted(aliases.get(str(v.version), []))),
            )
            for v in found
        ]
        return sorted(infos, key=lambda v: int(v.version))


def require_champion(registry: ModelRegistry) -> ModelVersionInfo:
    """The version with the alias champion now; NoChampionError when none has it yet."""
    champion = registry.alias(CHAMPION)
    if champion is None:
        raise NoChampionError(
            f"no version of {registry.model_name} has the alias champion yet: materialize "
            "models/forecast_model for the first round (make demo runs the rounds)"
        )
    return champion


def lineage(versions: list[ModelVersionInfo], version: str) -> dict[str, list[str]]:
    """Ancestors (parent, grandparent, ...) and descendants (breadth first) via ``parent_version``."""
    parent_of = {v.version: v.tags.get("parent_version") or None for v in versions}
    children: dict[str, list[str]] = {}
    for child, parent in parent_of.items():
        if parent:
            children.setdefault(parent, []).append(child)
    ancestors: list[str] = []
    seen = {version}
    current = parent_of.get(version)
    while current and current not in seen:
        ancestors.append(current)
        seen.add(current)
        current = parent_of.get(current)
    descendants: list[str] = []
    queue = list(children.get(version, []))
    while queue:
        node = queue.pop(0)
        if node in seen:
            continue
        seen.add(node)
        descendants.append(node)
        queue.extend(children.get(node, []))
    return {"ancestors": ancestors, "descendants": sorted(descendants, key=int)}


def lineage_markdown(versions: list[ModelVersionInfo], version: str) -> str:
    tree = lineage(versions, version)
    by_version = {v.version: v for v in versions}
    lines = ["| version | relation | trigger | aliases |", "|---|---|---|---|"]
    rows = [(v, "ancestor") for v in reversed(tree["ancestors"])] + [(version, "this")]
    rows += [(v, "descendant") for v in tree["descendants"]]
    for number, relation in rows:
        info = by_version.get(number)
        trigger = info.tags.get("trigger", "") if info else ""
        aliases = ", ".join(info.aliases) if info else ""
        lines.append(f"| {number} | {relation} | {trigger} | {aliases} |")
    return "\n".join(lines)
