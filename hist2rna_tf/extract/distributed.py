"""Feature extraction on Ray: one worker (actor) per GPU, or per `cpus_per_worker` CPUs, each
building the backbone and normaliser once and running the per-slide tf.data pipeline of
`extractor.py` on the slides it is dealt.

The driver deals slides dynamically, largest first (a free worker takes the next pending slide, so
one slow slide never idles the others), and alone writes the records and the manifest, as results
arrive, atomically (`cohort.extract_cohort` does the writing, as for one process). A worker that
dies (killed, out of memory, node lost) is restarted by Ray and its slide dealt again, at most
`max_retries` times; a slide that fails for its own reason (not a slide, no tissue, no MPP) comes
back as that failure, once. Ray is an optional extra: `pip install hist2rna-tf[ray]`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from pathlib import Path

from hist2rna_tf.config import RAY_CPUS_PER_WORKER, RAY_MAX_RETRIES, ExtractConfig
from hist2rna_tf.errors import Hist2RNAError, SlideError
from hist2rna_tf.extract.slides import SlideRef
from hist2rna_tf.progress import bar as progress_bar
from hist2rna_tf.tfenv import start_tensorflow

log = logging.getLogger(__name__)

# A local instance started by `--ray` binds to 127.0.0.1 only (Ray's own switch, read when `ray`
# is imported; without it a private instance listens on every interface).
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
DEFAULT_CPUS_PER_WORKER = RAY_CPUS_PER_WORKER
MAX_RETRIES = RAY_MAX_RETRIES  # times a slide is dealt again after its worker died
CHUNKS_PER_WORKER = 1  # runs of slides per worker's share of what is left to deal (halving: 1/2, 1/4, ...)
PROBE_SECONDS = 0.5  # how often a restarting worker is asked whether it is back
RESTART_SECONDS = 600  # a worker not back by then is left out
START_SECONDS = 900  # for every worker to build its extractor (ImageNet weights may be downloading)


def _ray():
    try:
        import ray
    except ImportError:
        raise Hist2RNAError("--ray needs Ray: pip install 'hist2rna-tf[ray]' (or pip install ray).") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at `address` ('auto': the one this node belongs to), or start a private
    local instance (None) bound to 127.0.0.1. Returns whether this call started (and so should
    stop) it; an already connected driver (a notebook's ray.init) is used as it is."""
    if address is None:  # read when Ray is imported; inherited by the raylet and the workers it starts
        os.environ.update(LOCAL_ONLY_ENV)
    ray = _ray()
    if ray.is_initialized():
        return False
    try:
        local = dict(num_cpus=num_cpus, _node_ip_address="127.0.0.1") if address is None else {}
        ray.init(address=address, include_dashboard=False, **local,
                 logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise Hist2RNAError(f"--ray {address or ''}: could not connect to a Ray cluster ({exc}). Start one "
                            "(`ray start --head` on one node, `ray start --address HEAD:6379` on the others) "
                            "or use --ray without an address for a private instance on this machine.") from None
    return True


@dataclass(frozen=True)
class BackboneInfo:
    """What the driver needs of the workers' backbone to name and check records."""

    name: str
    weights_tag: str
    feature_dim: int


@dataclass
class _Run:
    """A run of slides dealt to one worker, and how many of them have come back."""

    chunk: list[int]
    worker: int
    done: int = 0


class _Worker:
    """One Ray actor: an Extractor built once, extracting one slide per call."""

    def __init__(self, config: ExtractConfig, cpus: int):
        gpus = start_tensorflow()  # quietly: Ray forwards a worker's stderr to the driver's terminal
        import tensorflow as tf

        if not gpus:  # keep to this worker's share of the node's cores
            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(cpus)
        from hist2rna_tf.extract.extractor import Extractor

        self.extractor = Extractor.build(replace(config, read_threads=config.read_threads or 2 * max(1, cpus)))

    def info(self) -> tuple[BackboneInfo, ExtractConfig, int]:
        backbone = self.extractor.backbone
        return BackboneInfo(backbone.name, backbone.weights_tag, backbone.feature_dim), self.extractor.config, os.getpid()

    def extract(self, refs: list[SlideRef], annotations: list[Path | None]):
        """Yield (index in refs, SlideFeatures or SlideError, candidate tiles, seconds) per slide, in
        order, as its one tf.data stream finishes each (batches span slides, as in one process)."""
        yield from self.extractor.extract(refs, annotations)


class RayWorkers:
    """Extraction workers on a Ray cluster, built once and reusable across cohorts (like Extractor).

    `start()` makes one worker per GPU of the cluster, or, without GPUs, one per `cpus_per_worker`
    CPUs (at least one). Pass it to `cohort.extract_cohort(..., extractor=workers)`."""

    def __init__(self, actors: list, config: ExtractConfig, backbone: BackboneInfo, pids: list[int],
                 max_retries: int = MAX_RETRIES, started_ray: bool = False):
        self.actors, self.config, self.backbone, self.pids = actors, config, backbone, pids
        self.max_retries, self.started_ray = max_retries, started_ray
        self.retried: Counter = Counter()  # slide id -> times dealt again after its worker died
        self.busy: dict[int, str] = {}  # worker index -> the slide it is extracting
        self.running: dict[int, list[str]] = {}  # worker index -> the run of slides it was dealt

    @classmethod
    def start(cls, config: ExtractConfig = ExtractConfig(), address: str | None = None,
              cpus_per_worker: int | None = None, workers: int | None = None, max_retries: int = MAX_RETRIES,
              num_cpus: int | None = None) -> "RayWorkers":
        """Connect (see `connect`), then start the workers and wait until each has built its extractor."""
        if max_retries < 0:
            raise Hist2RNAError(f"max_retries must be 0 or more, got {max_retries}.")
        actors, infos, started = start_actors(_Worker, config, address, cpus_per_worker, workers, max_retries, 0,
                                              num_cpus)
        backbone, resolved, _ = infos[0]
        resolved = replace(resolved, read_threads=config.read_threads)  # each worker's own is its business
        return cls(actors, resolved, backbone, [pid for _, _, pid in infos], max_retries, started)

    def close(self) -> None:
        """Stop the workers (and the Ray instance, when `start` started it)."""
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started_ray:
            ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def extract(self, refs: list[SlideRef], annotations: list[Path | None], claim=None, progress: bool = False):
        """Yield (index, SlideFeatures or SlideError or ClaimedElsewhere, candidate tiles, seconds) for
        each of `refs` as workers finish them (not in order). `claim(i)` is asked just before slide i
        is dealt, as in `extractor.stream_features`.

        Slides are dealt in runs ("chunks", largest slides first): a run's slides share one tf.data
        stream in the worker, so small slides (TMA cores) fill whole batches as in one process, and
        each slide comes back as soon as it is done. A run holds about 1/CHUNKS_PER_WORKER of a
        worker's share of the bytes still to deal, so runs shrink towards the end and the workers
        finish together."""
        ray = _ray()
        sizes = [_slide_bytes(ref) for ref in refs]  # read once: dealing weighs them again and again
        queue = deque(sorted(range(len(refs)), key=lambda k: -sizes[k]))  # largest first
        self._idle, self._in_flight, self._probe_at = list(range(len(self.actors))), {}, {}
        self._probe_worker, self._lost_since = {}, {}
        claimed: set[int] = set()
        bar = progress_bar(total=len(refs), unit="slide", desc="slides", enabled=progress)
        while queue or any(task is not None for task in self._in_flight.values()):
            self._send_probes()
            while self._idle and queue:
                chunk = []
                for k, elsewhere in self._next_chunk(queue, sizes, claim, claimed):
                    if elsewhere is None:
                        chunk.append(k)
                    else:
                        bar.update()
                        yield k, elsewhere, 0, 0.0
                if chunk:
                    w = self._idle.pop(0)
                    self.busy[w] = refs[chunk[0]].slide_id
                    self.running[w] = [refs[k].slide_id for k in chunk]
                    stream = self.actors[w].extract.remote([refs[k] for k in chunk], [annotations[k] for k in chunk])
                    self._in_flight[stream] = _Run(chunk, w)
            if not self._in_flight and not self._probe_at:
                if not queue:
                    break
                raise Hist2RNAError(f"every Ray worker died; {len(queue)} slides are left pending in the manifest. "
                                    "Re-run the same command to resume.")
            ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=PROBE_SECONDS) if self._in_flight \
                else (time.sleep(PROBE_SECONDS) or [], None)
            outcomes = self._outcome(ready[0], refs) if ready else []
            queue.extendleft(reversed([k for k, outcome in outcomes if outcome == "again"]))  # first, in order
            for k, outcome in outcomes:
                if outcome != "again":
                    bar.update()
                    yield (k, *outcome)
        bar.close()

    def _next_chunk(self, queue: deque, sizes: list[int], claim, claimed: set):
        """Pop the next run of slides off the queue: (index, None) for each dealt, (index,
        ClaimedElsewhere) for each another run holds."""
        budget = sum(sizes[k] for k in queue) / (CHUNKS_PER_WORKER * len(self.actors))
        taken = 0
        while queue and (taken == 0 or taken + sizes[queue[0]] <= budget):
            k = queue.popleft()
            elsewhere = claim(k) if claim is not None and k not in claimed else None
            if elsewhere is None:
                claimed.add(k)
                taken += max(sizes[k], 1)
            yield k, elsewhere

    def _outcome(self, ready, refs: list[SlideRef]):
        """What a ready call brought, as (slide index, (record, candidates, seconds) or "again") pairs:
        the next slide of a run; when its worker died, that slide (dealt again, or failed past
        max_retries) and the run's other unfinished slides (dealt again); nothing for a probe."""
        from ray.exceptions import RayActorError

        run = self._in_flight[ready]
        if run is None:  # a readiness probe of a restarting worker
            w = self._probe_worker.pop(ready)
            del self._in_flight[ready]
            try:
                self.pids[w] = _ray().get(ready)[2]  # back, as a new process
            except RayActorError as exc:
                self._probe_failed(w, exc)
                return []
            self._lost_since.pop(w, None)
            self._idle.append(w)
            return []
        try:
            index, record, candidates, seconds = _ray().get(next(ready))
        except StopIteration:  # the run is done
            del self._in_flight[ready]
            self.busy.pop(run.worker, None)
            self._idle.append(run.worker)
            return []
        except RayActorError as exc:
            del self._in_flight[ready]
            self.busy.pop(run.worker, None)
            left = run.chunk[run.done:]
            return [(left[0], self._worker_died(left[0], run.worker, exc, refs))] + [(k, "again") for k in left[1:]]
        run.done += 1
        if run.done < len(run.chunk):
            self.busy[run.worker] = refs[run.chunk[run.done]].slide_id
        return [(run.chunk[index], (record, candidates, seconds))]

    def _worker_died(self, k: int, w: int, exc: Exception, refs: list[SlideRef]):
        """Slide k's worker died under it: Ray restarts the worker (probed until it answers); the
        slide is dealt again ("again"), or fails once it has been `max_retries` times."""
        self._probe_at[w] = time.monotonic()
        self._lost_since.setdefault(w, time.monotonic())
        slide_id = refs[k].slide_id
        if self.retried[slide_id] < self.max_retries:
            self.retried[slide_id] += 1
            log.warning("%s: its Ray worker died (%s); dealing it again (%d of %d).", slide_id,
                        type(exc).__name__, self.retried[slide_id], self.max_retries)
            return "again"
        return SlideError(f"{refs[k].path}: its Ray worker died {self.max_retries + 1} times while extracting "
                          f"it (last: {type(exc).__name__}); it may need more memory than a worker has (try a "
                          "larger --cpus-per-worker or fewer --read-threads)."), 0, 0.0

    def _probe_failed(self, w: int, exc: Exception) -> None:
        """A restarting worker did not answer: ask again shortly, unless it is gone for good (past
        its restarts) or has been away for RESTART_SECONDS."""
        from ray.exceptions import ActorDiedError

        away = time.monotonic() - self._lost_since.get(w, time.monotonic())
        if isinstance(exc, ActorDiedError) or away > RESTART_SECONDS:
            log.warning("Ray worker %d is gone (%s); going on with the others.", w, type(exc).__name__)
        else:
            self._probe_at[w] = time.monotonic() + PROBE_SECONDS

    def _send_probes(self) -> None:
        """Ask each restarting worker whose time has come whether it is back."""
        now = time.monotonic()
        for w, when in list(self._probe_at.items()):
            if when <= now:
                del self._probe_at[w]
                probe = self.actors[w].info.remote()
                self._in_flight[probe], self._probe_worker[probe] = None, w


def start_actors(worker: type, config: ExtractConfig, address: str | None = None, cpus_per_worker: int | None = None,
                 workers: int | None = None, max_restarts: int = MAX_RETRIES, max_task_retries: int = 0,
                 num_cpus: int | None = None) -> tuple[list, list, bool]:
    """Connect (see `connect`), start `worker(config, cpus)` actors as `worker_layout` lays them out (or
    `workers` of them), each restarted by Ray up to `max_restarts` times, and wait until each answers
    `info()`. Returns (actors, their infos, whether this call started Ray)."""
    started = connect(address, num_cpus)  # first: a local instance's settings are read when Ray is imported
    ray = _ray()
    try:
        count, per_worker, gpus = worker_layout([node["Resources"] for node in ray.nodes() if node["Alive"]],
                                                cpus_per_worker)
        options = {"num_gpus": 1, "num_cpus": per_worker} if gpus else {"num_cpus": per_worker}
        count = workers or count
        actor = ray.remote(max_restarts=max_restarts, max_task_retries=max_task_retries, **options)(worker)
        actors = [actor.remote(config, per_worker) for _ in range(count)]
        try:
            infos = ray.get([a.info.remote() for a in actors], timeout=START_SECONDS)
        except ray.exceptions.GetTimeoutError:
            raise Hist2RNAError(f"Ray: {count} workers of {options} did not all start in {START_SECONDS} s "
                                "(the cluster lacks the resources, or the backbone's weights are still "
                                "downloading); give a smaller --cpus-per-worker, or fetch the weights "
                                "first.") from None
    except BaseException:
        if started:
            ray.shutdown()
        raise
    log.info("Ray: %d workers (%s each)", count, f"1 GPU, {per_worker} CPUs" if gpus else f"{per_worker} CPUs")
    return actors, infos, started


def worker_layout(nodes: list[dict], cpus_per_worker: int | None = None) -> tuple[int, int, bool]:
    """(workers, CPUs each, with GPUs) for nodes' resources (Ray's {"CPU": .., "GPU": ..} per node):
    one worker per GPU with the CPUs of the GPU nodes shared out (the least a GPU gets on any node,
    so every worker fits), else one per `cpus_per_worker` CPUs (default 4, or all a node has when
    fewer), counted node by node (a worker cannot span nodes)."""
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= 1]
    if gpu_nodes:
        share = min(int(n.get("CPU", 0)) // int(n["GPU"]) for n in gpu_nodes)
        per_worker = max(1, min(cpus_per_worker or share, share)) if share else 0
        return sum(int(n["GPU"]) for n in gpu_nodes), per_worker, True
    largest = max((int(n.get("CPU", 0)) for n in nodes), default=1)
    per_worker = max(1, min(cpus_per_worker or DEFAULT_CPUS_PER_WORKER, largest))
    return max(1, sum(int(n.get("CPU", 0)) // per_worker for n in nodes)), per_worker, False


def _slide_bytes(ref: SlideRef) -> int:
    """A slide's size on disk (a pre-tiled folder: its files'), to deal the largest first."""
    try:
        if ref.path.is_dir():
            return sum(f.stat().st_size for f in ref.path.iterdir())
        return ref.path.stat().st_size
    except OSError:
        return 0
