"""One reconcile of one ModelDeployment: observe, decide (pure core), record, apply.

Order matters for restart safety: the decided status is written first, then the children
are applied. An operator killed in between resumes from the recorded status and applies
the same children again (server-side apply is idempotent), so a step is never repeated or
skipped and a recorded rollback is never lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modeldeploy import (
    analysis,
    experiment_reading,
    legacy,
    metrics,
    monitoring,
    notify,
    podstatus,
    resources,
    validation,
)
from modeldeploy.api import (
    API_VERSION,
    CONTROL,
    KIND,
    AnalysisStatus,
    CheckResult,
    ModelDeployment,
    ModelDeploymentStatus,
    Outcome,
    Phase,
    StrategyType,
    ValidationVerdict,
    Verdict,
    duration_seconds,
)
from modeldeploy.config import OperatorConfig
from modeldeploy.kube import Kube, KubeError, ObjectRef, resource_version
from modeldeploy.merge_patch import merge_patch
from modeldeploy.model_checks import ModelChecks, model_checks
from modeldeploy.promql import QueryContext
from modeldeploy.rollout import (
    DROPPED_CONDITIONS,
    READY,
    RECONCILING,
    STALLED,
    Decision,
    Observation,
    Track,
    TrackObservation,
    TrackPlan,
    analysis_due,
    analysis_track,
    decide,
    set_condition,
)
from modeldeploy.rollout.experiment import ExperimentDue, experiment_due, experiments
from modeldeploy.rollout.model import ArmCount, ExperimentReading
from modeldeploy.rollout.shadow import in_shadow
from modeldeploy.routers import router_for
from modeldeploy.shadow_checks import with_shadow_checks
from modeldeploy.validation import ValidationResult

log = logging.getLogger("modeldeploy.reconciler")

CONFLICT_RETRY_SECONDS = 30.0
# The field manager that keeps a Deployment's size while an HPA takes it over.
HANDOVER_MANAGER = "modeldeploy-handover"
# A new autoscaled Deployment starts with one pod; the HPA raises it to its minimum.
HANDOVER_START = 1
COMPONENT = "modeldeploy-operator"
# Children a cluster may not serve, left out (with a warning) rather than failing the
# reconcile: GRPCRoute needs Gateway API v1.1, and HTTP traffic does not depend on it.
OPTIONAL_KINDS = frozenset({"GRPCRoute"})
NO_PROMETHEUS = (
    "no Prometheus configured: set spec.analysis.prometheus.url or start the operator with "
    "--default-prometheus-url"
)


class SecretsOff(Exception):
    """A spec references a Secret, and this operator was told never to read Secrets."""


class ChildConflict(Exception):
    """A child's name is taken by an object this ModelDeployment does not control."""


def observe_track(deployment: dict[str, Any] | None) -> TrackObservation:
    if deployment is None:
        return TrackObservation()
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    metadata = deployment.get("metadata", {})
    replicas = int(spec.get("replicas", 1))
    rolled_out = (
        status.get("observedGeneration", 0) >= metadata.get("generation", 0)
        and status.get("updatedReplicas", 0) >= replicas
        and status.get("replicas", 0) <= replicas
    )
    return TrackObservation(
        exists=True,
        revision=metadata.get("labels", {}).get(resources.REVISION_LABEL),
        replicas=replicas,
        ready_replicas=int(status.get("readyReplicas", 0)),
        rolled_out=rolled_out,
    )


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in obj.get("metadata", {}).get("ownerReferences", [])
    )


def status_dump(status: ModelDeploymentStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


ChildKey = tuple[str, str, str]  # kind, namespace, name


def child_key(obj: dict[str, Any]) -> ChildKey:
    return (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])


@dataclass
class ChildMemory:
    """What this process knows of the children, so it asks the API server less.

    `objects` holds the newest Deployments seen (watch events and apply responses);
    `applied` the hash last applied to each child, so unchanged children are not re-sent.
    """

    objects: dict[ChildKey, dict[str, Any]] = field(default_factory=dict)
    # Deployments known not to exist (a 404, or a watch deletion). Only observations trust
    # this; an apply still asks the API server first, so a foreign object is never taken.
    absent: set[ChildKey] = field(default_factory=set)
    applied: dict[ChildKey, str] = field(default_factory=dict)
    verified_at: dict[ChildKey, float] = field(default_factory=dict)

    def remember(self, obj: dict[str, Any]) -> None:
        key = child_key(obj)
        self.absent.discard(key)
        known = self.objects.get(key)
        if known is None or resource_version(obj) >= resource_version(known):
            self.objects[key] = obj

    def forget(self, key: ChildKey) -> None:
        self.absent.add(key)
        self.objects.pop(key, None)
        self.applied.pop(key, None)
        self.verified_at.pop(key, None)


class Reconciler:
    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config
        self.memory = ChildMemory()
        self._warned: set[tuple[str, int | None, str]] = set()
        self._feedback_keys: set[tuple[str, str, str]] = set()
        self._unserved_kinds: set[str] = set()

    async def reconcile(self, body: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
        """Reconcile one object; returns (seconds until the next look, the updated object)."""
        started = time.monotonic()
        result = "ok"
        metadata = body["metadata"]
        ref = ObjectRef(API_VERSION, KIND, metadata["namespace"], metadata["name"], metadata["uid"])
        try:
            try:
                md = ModelDeployment.model_validate(body)
            except ValidationError as error:
                parsed = await self._stored_by_an_older_release(body, ref, error)
                if parsed is None:
                    result = "invalid"
                    return None, await self._invalid(legacy.repair(body).body, ref, error)
                md, unusable = parsed
                return await self._reconcile(body, md, ref, invalid_spec=unusable)
            return await self._reconcile(body, md, ref)
        except ChildConflict:
            result = "conflict"
            return CONFLICT_RETRY_SECONDS, None
        except KubeError:
            result = "retry"
            raise
        except Exception:
            result = "error"
            raise
        finally:
            metrics.RECONCILES.labels(result).inc()
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    async def _stored_by_an_older_release(
        self, body: dict[str, Any], ref: ObjectRef, error: ValidationError
    ) -> tuple[ModelDeployment, str | None] | None:
        """An object that fails today's rules, repaired as far as it safely can be.

        (object, None) when clamping bounds was enough; (object, why) when the spec cannot
        be acted on but a canary runs, which must then be rolled back; None when the
        object is simply invalid.
        """
        repaired = legacy.repair(body)
        try:
            md = ModelDeployment.model_validate(repaired.body)
        except ValidationError:
            return None
        walking = md.status.canary is not None and md.status.phase != Phase.PROMOTING
        if repaired.unusable and not walking:
            return None
        generation = body["metadata"].get("generation")
        for note in repaired.clamped + repaired.status_fixed:
            await self._warn_once(ref, generation, "SpecAdjusted", note)
        if repaired.unusable:
            return md, "; ".join(repaired.unusable)
        log.info("%s/%s: stored before today's rules: %s", ref.namespace, ref.name, error)
        return md, None

    async def _warn_once(
        self, ref: ObjectRef, generation: int | None, reason: str, message: str
    ) -> None:
        """A Warning event per object generation and message, not one per reconcile."""
        key = (ref.uid, generation, message)
        if key in self._warned:
            return
        self._warned.add(key)
        await self._event(ref, "Warning", reason, message)

    async def _reconcile(
        self,
        body: dict[str, Any],
        md: ModelDeployment,
        ref: ObjectRef,
        invalid_spec: str | None = None,
    ) -> tuple[float | None, dict[str, Any] | None]:
        metadata = body["metadata"]
        namespace, name, uid = ref.namespace, ref.name, ref.uid
        now = datetime.now(UTC)

        template = resources.template_of(md.spec, self.config.default_image)
        revision = resources.revision_of(template)
        # The first decision deploys the stable whatever exists: observing would cost two
        # reads per new object, which add up when hundreds arrive at once.
        first = md.status.stable is None
        stable_dep = None if first else await self._deployment_of(namespace, f"{name}-stable")
        canary_dep = None if first else await self._deployment_of(namespace, f"{name}-canary")
        variants = {
            variant: observe_track(
                await self._deployment_of(
                    namespace, resources.deployment_name(name, resources.variant_track(variant))
                )
            )
            for variant in ([] if first else _variant_names(md))
        }
        observation = Observation(
            spec=md.spec,
            generation=metadata.get("generation", 0),
            revision=revision,
            template=template,
            status=md.status,
            stable=observe_track(stable_dep),
            canary=observe_track(canary_dep),
            annotations=metadata.get("annotations") or {},
            now=now,
            invalid_spec=invalid_spec,
            name=name,
            variants=variants,
        )
        if _checking(md):
            result = await self._offline_check(md)
            observation = dataclasses.replace(observation, validation=result)
        if _waiting_long_for_canary(md.status, canary_dep, now):
            problem = await self._canary_pod_problem(md)
            observation = dataclasses.replace(observation, canary_pod_problem=problem)
        if analysis_due(observation):
            verdict = await self._analyse(md, analysis_track(observation))
            observation = dataclasses.replace(observation, analysis=verdict)
        due = experiment_due(observation)
        if due is not None:
            reading = await self._read_experiment(md, due, now)
            observation = dataclasses.replace(observation, experiment=reading)
        decision = decide(observation)
        if monitoring.monitoring_due(md.spec, decision.status, now):
            await self._monitor(md, decision, now)
        wait = monitoring.seconds_until_due(md.spec, decision.status, now)
        if wait is not None and (decision.requeue_after is None or wait < decision.requeue_after):
            decision.requeue_after = wait

        children = self._children(md, uid, decision)
        try:
            existing = await self._owned_or_absent(children, uid)
        except ChildConflict as conflict:
            # Nothing is written while a name is taken: no half-applied ModelDeployment.
            await self._record_failure(body, ref, "NameConflict", str(conflict))
            raise
        if first:
            # Nothing to resume yet (a lost status write just deploys the same stable
            # again), so the new object's children need not wait for its status.
            recording = asyncio.create_task(self._record(body, ref, decision, now))
            try:
                await self._apply_children(md, uid, decision, children, existing)
            finally:
                updated = await recording
        else:
            updated = await self._record(body, ref, decision, now)
            await self._apply_children(md, uid, decision, children, existing)
        wanted = {plan.name for plan in decision.variants}
        for variant, track in variants.items():
            if track.exists and variant not in wanted:
                await self._retire_variant(namespace, name, variant, uid)
        await self._announce(md, ref, decision)
        self._export(md, decision)
        return decision.requeue_after, updated

    # -- observe -----------------------------------------------------------------------

    async def _deployment_of(self, namespace: str, name: str) -> dict[str, Any] | None:
        key = ("Deployment", namespace, name)
        if key in self.memory.objects:
            return self.memory.objects[key]
        if key in self.memory.absent:
            return None
        found = await self.kube.get("apps/v1", "Deployment", namespace, name, cached=True)
        if found is None:
            self.memory.absent.add(key)
        else:
            found.setdefault("kind", "Deployment")
            self.memory.remember(found)
        return found

    async def _canary_pod_problem(self, md: ModelDeployment) -> str | None:
        canary = md.status.canary
        assert canary is not None
        labels = {
            **resources.track_selector(md.metadata.name, Track.CANARY),
            resources.REVISION_LABEL: canary.revision,
        }
        try:
            pods = await self.kube.list("v1", "Pod", md.metadata.namespace, labels)
        except KubeError as error:
            log.warning("cannot read the canary pods of %s: %s", md.metadata.name, error)
            return None
        return podstatus.pod_problems(pods)

    async def _analyse(self, md: ModelDeployment, track: Track) -> AnalysisStatus:
        """The analysis of `track`'s last interval (the new revision's pods). Never raises:
        whatever fails becomes an Error verdict, which holds the step and counts toward
        inconclusiveLimit."""
        now = datetime.now(UTC)
        try:
            client = await self._prometheus(md)
        except SecretsOff as error:
            return _backend_error(str(error), now)
        except KubeError as error:
            return _backend_error(f"cannot read the Prometheus credentials: {error}", now)
        if client is None:
            return _backend_error(NO_PROMETHEUS, now)
        context = QueryContext(
            namespace=md.metadata.namespace,
            name=md.metadata.name,
            track="stable" if track == Track.STABLE else "canary",
            interval=md.spec.rollout.interval,
            model=md.spec.model.name,
            version=md.spec.model.version,
        )
        stable = md.status.stable
        alongside = (
            dataclasses.replace(context, track="stable", version=stable.version)
            if track == Track.CANARY and stable is not None
            else None
        )
        spec = md.spec.analysis
        shadow = track == Track.CANARY and in_shadow(md.status.canary)
        if shadow:
            # Nobody sees a shadow's answers, so no feedback can come for them.
            spec = spec.model_copy(update={"quality": None})
        try:
            async with client:
                model: Awaitable[ModelChecks] | None = (
                    model_checks(client, spec, context, alongside)
                    if spec.drift is not None or spec.quality is not None
                    else None
                )
                if shadow:
                    settings = md.spec.strategy.shadow_settings()
                    model = with_shadow_checks(model, client, settings, context)
                return await analysis.analyse(client, spec, context, now, model)
        except Exception as error:
            log.exception("analysis of %s/%s failed", md.metadata.namespace, md.metadata.name)
            return _backend_error(f"the analysis failed: {type(error).__name__}", now)

    async def _read_experiment(
        self, md: ModelDeployment, due: ExperimentDue, now: datetime
    ) -> ExperimentReading:
        """Each running variant's SLO analysis of the last interval and, when the verdict
        is due, every arm's counts since counting began. Never raises: a failure becomes
        an Error analysis or an arm's problem, which hold the experiment."""
        experiment = md.status.experiment
        settings = md.spec.strategy.experiment
        assert experiment is not None
        assert settings is not None
        arms = {arm.name: arm for arm in (experiment.control, *experiment.variants)}
        try:
            client = await self._prometheus(md)
        except (SecretsOff, KubeError) as error:
            client, unusable = None, str(error)
        else:
            unusable = NO_PROMETHEUS
        counted = [CONTROL, *due.guardrails] if due.counts else []
        if client is None:
            return ExperimentReading(
                at=now,
                guardrails={v: _backend_error(unusable, now) for v in due.guardrails},
                counts={arm: ArmCount(problem=unusable) for arm in counted} if due.counts else None,
            )
        # SLO checks only: a variant is a different model on purpose, so drift against
        # control is no reason to cut it, and quality is what the verdict compares.
        slo = md.spec.analysis.model_copy(update={"drift": None, "quality": None})
        interval = md.spec.rollout.interval
        window = experiment_reading.window(due.window_seconds)
        try:
            async with client:
                guardrails = {
                    variant: await analysis.analyse(
                        client,
                        slo,
                        experiment_reading.arm_context(md, arms[variant], interval),
                        now,
                    )
                    for variant in due.guardrails
                }
                counts = {
                    arm: await experiment_reading.count_arm(
                        client,
                        settings.metric,
                        experiment_reading.arm_context(md, arms[arm], window),
                    )
                    for arm in counted
                }
        except Exception as error:
            log.exception(
                "experiment reading of %s/%s failed", md.metadata.namespace, md.metadata.name
            )
            problem = f"the reading failed: {type(error).__name__}"
            return ExperimentReading(
                at=now,
                guardrails={v: _backend_error(problem, now) for v in due.guardrails},
                counts={arm: ArmCount(problem=problem) for arm in counted} if due.counts else None,
            )
        return ExperimentReading(
            at=now, guardrails=guardrails, counts=counts if due.counts else None
        )

    async def _monitor(self, md: ModelDeployment, decision: Decision, now: datetime) -> None:
        """One monitoring pass of the stable; its results join the decision's status,
        events and notifications."""
        stable = decision.status.stable
        assert stable is not None
        assert md.spec.monitoring is not None
        context = QueryContext(
            namespace=md.metadata.namespace,
            name=md.metadata.name,
            track="stable",
            interval=md.spec.monitoring.interval,
            model=md.spec.model.name,
            version=stable.version,
        )
        try:
            client = await self._prometheus(md)
        except (SecretsOff, KubeError) as error:
            answers = monitoring.unanswered(str(error))
        else:
            if client is None:
                answers = monitoring.unanswered(NO_PROMETHEUS)
            else:
                async with client:
                    answers = await monitoring.ask(client, md.spec, context)
        outcome = monitoring.assess(md.spec, decision.status, answers, now)
        decision.status.drift = outcome.drift
        decision.status.slo = outcome.slo
        decision.events += outcome.events
        decision.notifications += outcome.notifications

    async def _prometheus(self, md: ModelDeployment) -> analysis.PrometheusClient | None:
        spec = md.spec.analysis.prometheus
        allowed = self.config.allowed_prometheus_urls
        if spec is None:
            url = self.config.default_prometheus_url
            # The platform team's own default needs no allow-list entry.
            return analysis.PrometheusClient(url) if url else None
        token = ca = None
        if spec.bearer_token_secret_ref is not None:
            ref = spec.bearer_token_secret_ref
            token = await self._secret(md, ref.name, ref.key, "analysis.prometheus")
        if spec.ca_secret_ref is not None:
            ref = spec.ca_secret_ref
            ca = await self._secret(md, ref.name, ref.key, "analysis.prometheus")
        return analysis.PrometheusClient.from_spec(spec, bearer_token=token, ca=ca, allowed=allowed)

    async def _secret(self, md: ModelDeployment, name: str, key: str, used_by: str) -> bytes:
        if not self.config.read_secrets:
            raise SecretsOff(
                f"{used_by} references Secret {name}, but this operator does not read Secrets "
                "(started with --no-secret-access, chart value secretAccess.enabled=false); "
                "remove the reference or ask your platform team"
            )
        return await self.kube.read_secret_key(md.metadata.namespace, name, key)

    # -- record ------------------------------------------------------------------------

    async def _record(
        self, body: dict[str, Any], ref: ObjectRef, decision: Decision, now: datetime
    ) -> dict[str, Any] | None:
        old = body.get("status") or {}
        new = status_dump(decision.status)
        if old == new:
            return None
        return await self.kube.patch_status(ref.namespace, ref.name, merge_patch(old, new))

    async def _invalid(
        self, body: dict[str, Any], ref: ObjectRef, error: ValidationError
    ) -> dict[str, Any] | None:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        return await self._record_failure(
            body, ref, "InvalidSpec", f"the spec is invalid: {problems}"
        )

    async def _record_failure(
        self,
        body: dict[str, Any],
        ref: ObjectRef,
        reason: str,
        message: str,
    ) -> dict[str, Any] | None:
        """Phase Failed, Ready False and Stalled True with `reason`, and a Warning event,
        once per cause."""
        status = ModelDeploymentStatus.model_validate(body.get("status") or {})
        generation = body["metadata"].get("generation")
        if status.observed_generation == generation and any(
            c.type == STALLED and c.reason == reason and c.message == message
            for c in status.conditions
        ):
            return None
        status.phase = Phase.FAILED
        status.message = message
        status.observed_generation = generation
        now = datetime.now(UTC)
        status.conditions = [c for c in status.conditions if c.type not in DROPPED_CONDITIONS]
        for kind, true in ((READY, False), (RECONCILING, False), (STALLED, True)):
            set_condition(status, kind, true, reason, message, now, generation)
        await self._event(ref, "Warning", reason, message)
        old = body.get("status") or {}
        return await self.kube.patch_status(
            ref.namespace, ref.name, merge_patch(old, status_dump(status))
        )

    # -- apply -------------------------------------------------------------------------

    def _children(self, md: ModelDeployment, uid: str, decision: Decision) -> list[dict[str, Any]]:
        namespace, name = md.metadata.namespace, md.metadata.name
        router = router_for(md.spec.traffic.router)
        desired = [
            resources.service(name, namespace, uid, live_tracks=decision.live_tracks),
            resources.service(name, namespace, uid, Track.STABLE),
        ]
        if md.spec.strategy.type == StrategyType.BLUE_GREEN:
            desired.append(resources.preview_service(name, namespace, uid))
        # The canary's Service appears with its first canary (or up front when the router
        # sends traffic through it) and then stays. A ClusterIP allocation is the costliest
        # write the API server does for us, so objects that never run a canary skip it.
        if decision.canary is not None or router.routes_through_track_services:
            desired.append(resources.service(name, namespace, uid, Track.CANARY))
        if decision.stable is not None:
            desired.append(self._deployment(md, uid, Track.STABLE, decision.stable))
        if decision.canary is not None:
            desired.append(self._deployment(md, uid, Track.CANARY, decision.canary))
        for variant in decision.variants:
            track = resources.variant_track(variant.name)
            desired.append(resources.service(name, namespace, uid, track))
            desired.append(self._deployment(md, uid, track, variant.plan, variant.name))
        if md.spec.strategy.shadows():
            desired.append(
                resources.mirror_config_map(
                    name, namespace, uid, decision.mirror_percent, md.spec.model.name
                )
            )
        if md.spec.autoscaling is not None:
            desired.append(
                resources.horizontal_pod_autoscaler(name, namespace, uid, md.spec.autoscaling)
            )
        if decision.validation_attempt is not None:
            desired.append(self._validation_job(md, uid, decision, decision.validation_attempt))
        if decision.variants:
            weights = {variant.name: variant.weight for variant in decision.variants}
            weights = {CONTROL: 100 - sum(weights.values()), **weights}
            routes = router.experiment_routes(name, namespace, md.spec, weights)
        else:
            routes = router.routes(name, namespace, md.spec, decision.weight, decision.live_tracks)
        desired += [resources.owned(route, name, uid) for route in routes]
        return desired

    def _validation_job(
        self, md: ModelDeployment, uid: str, decision: Decision, attempt: int
    ) -> dict[str, Any]:
        """The offline check's Job: the candidate through NAME-canary (its pods, no client
        traffic), the stable through NAME-stable, on the hold-out set; a first revision,
        which no client reaches yet either, through NAME-stable with no stable to compare."""
        spec = md.spec.validation
        canary, stable = decision.status.canary, decision.status.stable
        assert spec is not None
        assert stable is not None
        namespace, name = md.metadata.namespace, md.metadata.name
        template = resources.template_of(md.spec, self.config.default_image)
        checked = canary if canary is not None else stable
        candidate = validation.model_url(
            f"{name}-{Track.CANARY if canary is not None else Track.STABLE}",
            namespace,
            template.model.name,
            checked.version,
        )
        baseline = None
        if canary is not None and stable.template is not None:
            baseline = validation.model_url(
                f"{name}-stable", namespace, stable.template.model.name, stable.version
            )
        server = template.server
        assert server.image is not None
        return validation.validation_job(
            name,
            namespace,
            uid,
            checked.revision,
            spec,
            server.image,
            candidate,
            baseline,
            attempt=attempt,
            image_pull_policy=server.image_pull_policy,
            node_selector=server.node_selector,
            tolerations=[
                t.model_dump(by_alias=True, exclude_none=True) for t in server.tolerations
            ],
        )

    async def _offline_check(self, md: ModelDeployment) -> ValidationResult | None:
        """The running check's result as its Job and pod tell it; None until it exists."""
        checked, spec = md.status.validation, md.spec.validation
        assert checked is not None
        assert spec is not None
        namespace = md.metadata.namespace
        try:
            job = await self.kube.get("batch/v1", "Job", namespace, checked.job, cached=True)
            if job is None:
                return None
            pods = await self.kube.list("v1", "Pod", namespace, {"job-name": checked.job})
        except KubeError as error:
            log.warning("cannot read offline check %s: %s", checked.job, error)
            return None
        message = validation.termination_message(pods)
        # Against a stable only when a canary is checked; a first revision is on its own.
        return validation.verdict(job, message, spec, has_stable=md.status.canary is not None)

    def _unchanged(self, manifest: dict[str, Any]) -> bool:
        """Applied by this process with the same hash, recently enough to trust."""
        key = child_key(manifest)
        digest = manifest["metadata"]["annotations"][resources.HASH_ANNOTATION]
        fresh = time.monotonic() - self.memory.verified_at.get(key, 0) < self.config.resync_seconds
        return self.memory.applied.get(key) == digest and fresh

    async def _owned_or_absent(
        self, children: list[dict[str, Any]], uid: str
    ) -> dict[ChildKey, dict[str, Any] | None]:
        """The current copy of every child to (re)apply; ChildConflict if one is foreign."""
        pending = [m for m in children if not self._unchanged(m)]
        found = await asyncio.gather(*(self._current(m) for m in pending))
        for manifest, existing in zip(pending, found, strict=True):
            if existing is not None and not controlled_by(existing, uid):
                meta = manifest["metadata"]
                raise ChildConflict(
                    f"{manifest['kind']} {meta['name']} already exists and is not owned by this "
                    f"ModelDeployment; delete or rename it, and modeldeploy will create its own"
                )
        return {child_key(m): e for m, e in zip(pending, found, strict=True)}

    async def _current(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        key = child_key(manifest)
        known = self.memory.objects.get(key)
        if known is not None:
            return known
        return await self.kube.get(manifest["apiVersion"], manifest["kind"], *key[1:], cached=True)

    async def _apply_children(
        self,
        md: ModelDeployment,
        uid: str,
        decision: Decision,
        children: list[dict[str, Any]],
        existing: dict[ChildKey, dict[str, Any] | None],
    ) -> None:
        if self._signs_feedback(md):
            # before the pods that mount it
            await self._ensure_feedback_key(md, uid)
        # Children are independent of each other: apply them at once, report the first error.
        outcomes = await asyncio.gather(
            *(self._apply(m, existing[child_key(m)]) for m in children if child_key(m) in existing),
            return_exceptions=True,
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise errors[0]
        namespace, name = md.metadata.namespace, md.metadata.name
        if decision.canary is None:
            await self._delete_if_owned("apps/v1", "Deployment", namespace, f"{name}-canary", uid)
        if md.spec.autoscaling is None:
            # Autoscaling turned off: the operator sizes the stable again, the HPA goes.
            await self._delete_if_owned(
                "autoscaling/v2", "HorizontalPodAutoscaler", namespace, name, uid
            )

    def _deployment(
        self,
        md: ModelDeployment,
        uid: str,
        track: str,
        plan: TrackPlan,
        variant: str | None = None,
    ) -> dict[str, Any]:
        """A track's Deployment. Under strategy experiment the stable's pods name their arm
        (control) in metrics and answers, as each variant's pods name theirs."""
        # With autoscaling the HPA owns the stable's size; the operator stops applying it.
        autoscaled = md.spec.autoscaling is not None and track == Track.STABLE
        if track == Track.STABLE and experiments(md.spec):
            variant = CONTROL
        return resources.deployment(
            md.metadata.name,
            md.metadata.namespace,
            uid,
            track,
            plan.revision,
            plan.template,
            None if autoscaled else plan.replicas,
            feedback=self._signs_feedback(md),
            mirror=md.spec.strategy.shadows() and track in (Track.STABLE, Track.CANARY),
            variant=variant,
        )

    def _signs_feedback(self, md: ModelDeployment) -> bool:
        """Pods sign prediction tokens when quality is judged and the key can be kept."""
        return self.config.read_secrets and resources.collects_feedback(md.spec)

    async def _ensure_feedback_key(self, md: ModelDeployment, uid: str) -> None:
        namespace, name = md.metadata.namespace, md.metadata.name
        known = (namespace, resources.feedback_key_secret_name(name), uid)
        if known in self._feedback_keys:
            return
        secret = resources.feedback_key_secret(name, namespace, uid, secrets.token_urlsafe(32))
        try:
            await self.kube.create(secret)
        except KubeError as error:
            if error.status != 409:  # 409: it exists, and its key stays
                raise
        self._feedback_keys.add(known)

    async def _apply(self, manifest: dict[str, Any], existing: dict[str, Any] | None) -> None:
        key = child_key(manifest)
        digest = manifest["metadata"]["annotations"][resources.HASH_ANNOTATION]
        current = (existing or {}).get("metadata", {}).get("annotations", {})
        if current.get(resources.HASH_ANNOTATION) != digest:
            if manifest["kind"] == "Deployment" and "replicas" not in manifest["spec"]:
                manifest = await self._hand_size_over(manifest, existing)
            # Only an object already known to be ours is applied with force; a create that
            # races with someone else's object fails with a conflict instead of taking it.
            try:
                applied = await self.kube.apply(manifest, force=existing is not None)
            except KubeError as error:
                if error.status != 404 or manifest["kind"] not in OPTIONAL_KINDS:
                    raise
                self._warn_unserved_kind(manifest["kind"], str(error))
                applied = {}
            if applied.get("kind") == "Deployment":
                self.memory.remember(applied)
        self.memory.applied[key] = digest
        self.memory.verified_at[key] = time.monotonic()

    def _warn_unserved_kind(self, kind: str, error: str) -> None:
        """Once per process: a child kind this cluster does not serve is left out."""
        if kind in self._unserved_kinds:
            return
        self._unserved_kinds.add(kind)
        log.warning(
            "this cluster does not serve %s (%s): it is left out, and only what needs it "
            "goes without (gRPC calls through the Gateway are not split; install Gateway "
            "API v1.1 or later to have it)",
            kind,
            error,
        )

    async def _hand_size_over(
        self, manifest: dict[str, Any], existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        """A Deployment whose size an HPA takes over. A new one starts at the HPA's minimum.
        An existing one first has its current size applied by a handover field manager:
        dropping a field from the operator's apply would otherwise reset it to 1 pod."""
        if existing is None:
            return {**manifest, "spec": {**manifest["spec"], "replicas": HANDOVER_START}}
        size = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": manifest["metadata"]["name"],
                "namespace": manifest["metadata"]["namespace"],
            },
            "spec": {"replicas": int(existing.get("spec", {}).get("replicas", 1))},
        }
        await self.kube.apply(size, manager=HANDOVER_MANAGER)
        return manifest

    async def _retire_variant(self, namespace: str, name: str, variant: str, uid: str) -> None:
        """An experiment variant that must no longer run: its Service first (no request is
        routed to pods on their way out), then its Deployment, whose absence ends this."""
        child = resources.deployment_name(name, resources.variant_track(variant))
        service = await self.kube.get("v1", "Service", namespace, child)
        if service is not None and controlled_by(service, uid):
            await self.kube.delete("v1", "Service", namespace, child)
        self.memory.forget(("Service", namespace, child))
        await self._delete_if_owned("apps/v1", "Deployment", namespace, child, uid)

    async def _delete_if_owned(
        self, api_version: str, kind: str, namespace: str, name: str, uid: str
    ) -> None:
        key = (kind, namespace, name)
        if key not in self.memory.applied and key not in self.memory.objects:
            return  # never created by this process, and no watch event says it exists
        existing = self.memory.objects.get(key) or await self.kube.get(
            api_version, kind, namespace, name
        )
        if existing is not None and controlled_by(existing, uid):
            await self.kube.delete(api_version, kind, namespace, name)
        self.memory.forget(key)

    # -- announce ----------------------------------------------------------------------

    async def _event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None:
        try:
            await self.kube.event(ref, event_type, reason, message, COMPONENT)
        except KubeError as error:
            log.warning(
                "could not record event %s on %s/%s: %s", reason, ref.namespace, ref.name, error
            )

    async def _announce(self, md: ModelDeployment, ref: ObjectRef, decision: Decision) -> None:
        for event in decision.events:
            await self._event(ref, event.type, event.reason, event.message)
        webhook = md.spec.notifications.webhook
        if webhook is None or not decision.notifications:
            return
        secret = webhook.url_secret_ref
        try:
            raw = await self._secret(md, secret.name, secret.key, "notifications.webhook")
            url = raw.decode("utf-8").strip()
        except (SecretsOff, KubeError) as error:
            await self._event(ref, "Warning", "NotificationFailed", str(error))
            return
        except UnicodeDecodeError:
            message = f"the webhook URL in Secret {secret.name}, key {secret.key!r} is not text"
            await self._event(ref, "Warning", "NotificationFailed", message)
            return
        for note in decision.notifications:
            failure = await notify.post_notification(
                url,
                notify.Notification(
                    kind=notify.NotificationKind(note.kind.value),
                    namespace=md.metadata.namespace,
                    name=md.metadata.name,
                    version=note.version,
                    revision=note.revision,
                    message=note.message,
                ),
            )
            if failure is not None:
                await self._event(ref, "Warning", "NotificationFailed", failure)

    def _export(self, md: ModelDeployment, decision: Decision) -> None:
        namespace, name = md.metadata.namespace, md.metadata.name
        canary = decision.status.canary
        if canary is None:
            metrics.forget_canary(namespace, name)
        else:
            metrics.CANARY_STARTED.labels(namespace, name).set(canary.started_at.timestamp())
            metrics.CANARY_PROGRESS_DEADLINE.labels(namespace, name).set(
                duration_seconds(md.spec.rollout.progress_deadline)
            )
            metrics.CANARY_READY.labels(namespace, name).set(0 if canary.ready_at is None else 1)
        metrics.CANARY_WEIGHT.labels(namespace, name).set(decision.weight)
        metrics.CANARY_ACTUAL_WEIGHT.labels(namespace, name).set(
            (canary.actual_weight or 0) if canary else 0
        )
        if md.spec.monitoring is not None:
            metrics.export_monitoring(namespace, name, decision.status.drift, decision.status.slo)
        metrics.export_experiment(namespace, name, md.status.experiment, decision.status.experiment)
        fresh = decision.status.last_analysis
        if fresh is not None and fresh != md.status.last_analysis:
            metrics.ANALYSES.labels(namespace, name, fresh.verdict).inc()
            for check in fresh.checks:
                metrics.CHECK_RESULTS.labels(namespace, name, check.name, check.verdict).inc()
                if check.value is not None:
                    metrics.CHECK_VALUE.labels(namespace, name, check.name).set(check.value)
        previous = md.status.canary
        if decision.outcome is not None and previous is not None:
            took = (datetime.now(UTC) - previous.started_at).total_seconds()
            metrics.CANARY_DURATION.labels(decision.outcome).observe(took)
            if decision.outcome == Outcome.PROMOTED:
                metrics.PROMOTIONS.labels(namespace, name).inc()
            elif decision.outcome == Outcome.ROLLED_BACK:
                reason = decision.status.history[0].reason.split(":")[0]
                metrics.ROLLBACKS.labels(namespace, name, reason).inc()


# A canary's pods are looked at once they have had this long to start: pulling an image
# and loading a model take a while, and most canaries never need the extra read.
POD_CHECK_AFTER_SECONDS = 10.0


def _variant_names(md: ModelDeployment) -> list[str]:
    """Variants whose Deployments may exist: the last experiment's and the spec's."""
    names = [arm.name for arm in md.status.experiment.variants] if md.status.experiment else []
    settings = md.spec.strategy.experiment
    if settings is not None:
        names += [v.name for v in settings.variants if v.name not in names]
    return names


def _checking(md: ModelDeployment) -> bool:
    """An offline check is under way for the revision in flight (a canary, or a first
    revision that has not served yet)."""
    checked, canary, stable = md.status.validation, md.status.canary, md.status.stable
    candidate = canary if canary is not None else stable
    return (
        md.spec.validation is not None
        and checked is not None
        and candidate is not None
        and checked.revision == candidate.revision
        and checked.verdict == ValidationVerdict.PENDING
    )


def _waiting_long_for_canary(
    status: ModelDeploymentStatus, canary_dep: dict[str, Any] | None, now: datetime
) -> bool:
    canary = status.canary
    if canary is None or canary.ready_at is not None or canary_dep is None:
        return False
    if status.phase == Phase.PROMOTING:
        return False
    return (now - canary.started_at).total_seconds() >= POD_CHECK_AFTER_SECONDS


def _backend_error(message: str, now: datetime) -> AnalysisStatus:
    check = CheckResult(name="prometheus", verdict=Verdict.ERROR, message=message)
    return AnalysisStatus(at=now, verdict=Verdict.ERROR, checks=[check])
