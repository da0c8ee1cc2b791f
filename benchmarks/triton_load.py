"""Load a Triton-served edgernn model with many concurrent sequences, beside the same load on an in-process
StreamPool, in one run; prints docs/triton.md's table.

The model: a character GRU (1 layer of 128, 65 tokens; PyTorch's initialisation, seed 0) exported with
edgernn, or ``--model``. Triton: the repositories ``edgernn deploy --target triton --backend c`` (the
generated C in a backend of its own) and ``--backend python`` (a StreamPool in model.py) write, served
by the pip-installed tritonserver on 127.0.0.1, one load after the other. ``--sequences`` sequences each
send ``--steps`` requests, closed loop (a sequence's next step leaves when its answer is back), so the
server sees up to ``--sequences`` requests at once. Two clients: the C++ load generator
(triton_grpc_load.cc on grpc++, built on first use by triton_grpc_client.py; over bidirectional gRPC
streams) and ``Client`` in Python (grpcio's asyncio stub; streams or unary calls). Client and server
share this machine's cores, so the client's CPU per request counts. The pool: one ``StreamPool.step``
of all sequences per step, as a single-process server would run it. Also measured: CPU seconds per
1,000 stream-steps of the client, tritonserver (and the python flavour's stub), what the machine's
other processes used meanwhile, and how steady the machine's speed was just before (the machine may be
shared: compare the ratios). The Python client's garbage collector is off while it loads
(``collector_off``), and the served model.py freezes what it loaded (gc.freeze): full collections had
stalled all sequences at once for ~100 ms every ~2 s.

Run: python benchmarks/triton_load.py [--sequences 256] [--steps 1000] [--loads c:1:cpp,c:4:python,python:0:python]
[--model M.onnx] [--json out.json]  (needs pip install 'edgernn[serve]', a C compiler and, for the C++
client, apt-get install g++ libgrpc++-dev protobuf-compiler-grpc; ~3 min)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import triton_grpc_client  # benchmarks/triton_grpc_client.py, beside this script

from edgernn.export.deploy import deploy
from edgernn.export.triton.server import TritonServer
from edgernn.runtime import Stepper

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CLIENT_LABELS = {"python": "Python client", "cpp": "C++ client"}
BACKEND_LABELS = {
    "python": "python backend (StreamPool)",
    "c": "C backend (generated C)",
    "c-int8": "C backend (generated int8 C)",
}


@dataclass
class Load:
    label: str
    stream_steps: int
    seconds: float
    latencies_ms: np.ndarray = field(repr=False)
    cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy_cores: float = 0.0

    @property
    def steps_per_s(self) -> float:
        return self.stream_steps / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    def summary(self) -> dict:
        doc = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        doc.update(steps_per_s=self.steps_per_s, p50_ms=self.percentile_ms(50), p99_ms=self.percentile_ms(99))
        return doc


def export_reference(directory: Path) -> Path:
    import torch

    from edgernn.export import export_model
    from edgernn.models import ModelConfig, RecurrentModel

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = RecurrentModel(ModelConfig(cell="gru", input_size=65, hidden_size=128, output_size=65)).eval()
    path = directory / "chars.onnx"
    export_model(model, path, chunk_steps=None)
    return path


def token_inputs(stepper: Stepper, sequences: int, steps: int) -> np.ndarray:
    """Random token ids ``(sequences, steps)`` int64."""
    return np.random.default_rng(0).integers(0, stepper.info.input.size, (sequences, steps), dtype=np.int64)


# --- CPU accounting -------------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return found


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def client_cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (the C++ load generator)."""
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ended.ru_utime + ended.ru_stime


class CpuMeter:
    """CPU seconds of named processes over a span, and what the rest of the machine used meanwhile."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids

    def __enter__(self) -> CpuMeter:
        self.start = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        self.client0 = client_cpu_s()
        self.machine0, self.wall0 = machine_busy_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {name: process_cpu_s(pid) - self.start[name] for name, pid in self.pids.items()}
        self.used["client"] = client_cpu_s() - self.client0
        wall = time.perf_counter() - self.wall0
        others = machine_busy_s() - self.machine0 - sum(self.used.values())
        self.others_cores = max(others, 0.0) / wall


def machine_steadiness(seconds: float = 5.0, window_s: float = 0.1) -> tuple[float, float]:
    """A fixed piece of work counted in each 100 ms window for ``seconds``, on one core of a machine
    otherwise idle: (the slowest window's count over the median window's, the share of windows below
    80% of the median). A steady machine gives about 0.95 and 0; a shared one slows down for
    100-200 ms at a time, and a closed-loop load at saturation waits that much longer meanwhile."""
    counts, count = [], 0
    end = time.perf_counter() + seconds
    window_end = time.perf_counter() + window_s
    while (now := time.perf_counter()) < end:
        if now >= window_end:
            counts.append(count)
            count, window_end = 0, window_end + window_s
        total = 0
        for i in range(2000):
            total += i
        count += 1
    median = float(np.median(counts))
    return min(counts) / median, float(np.mean(np.asarray(counts) < 0.8 * median))


@contextlib.contextmanager
def collector_off():
    """The load generator's garbage collector off while it runs (as timeit does): with 256 coroutines'
    objects alive its full collections stalled every sequence in flight for about 100 ms at a time."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


# --- the in-process pool --------------------------------------------------------------------------


def pool_load(model: Path, xs: np.ndarray) -> tuple[Load, np.ndarray]:
    """The load on one in-process pool; returns it and every sequence's last y ``(S, O)``."""
    stepper = Stepper(model, chunk_model=False)
    pool = stepper.new_pool(len(xs))
    ids = [pool.join() for _ in range(len(xs))]
    for t in range(10):  # warm up
        pool.step(dict(zip(ids, xs[:, t], strict=True)))
    for i in ids:
        pool.reset(i)
    latencies = np.empty(xs.shape[1])
    with collector_off(), CpuMeter({}) as meter:
        start = time.perf_counter()
        for t in range(xs.shape[1]):
            began = time.perf_counter()
            ys = pool.step(dict(zip(ids, xs[:, t], strict=True)))
            latencies[t] = time.perf_counter() - began
        seconds = time.perf_counter() - start
    load = Load("in-process StreamPool", xs.size, seconds, latencies * 1e3, meter.used, meter.others_cores)
    return load, np.stack([ys[i] for i in ids])


# --- Triton over gRPC -----------------------------------------------------------------------------


class Client:
    """Closed-loop sequences over one asyncio gRPC channel: each sequence sends its next step when the
    answer to its last one is back, so up to ``len(xs)`` requests are in flight at once. The requests are
    tritonclient's own protobuf messages, kept per sequence and sent with grpcio's asyncio stub: the
    same wire format as ``tritonclient.grpc.aio`` at about two thirds of its client CPU per request.

    ``streams`` 0: one unary call per request. Otherwise the sequences share that many bidirectional
    gRPC streams (``ModelStreamInfer``, sequence k on stream k mod streams; answers matched by the
    request ID), as a streaming front end would hold a few connections for many users: less CPU per
    request on both sides. Under streams with 256 sequences in flight tritonserver 2.51's python backend
    crashed in most runs (SIGSEGV in TRITONBACKEND_RequestRelease), so it is loaded with unary calls.
    """

    def __init__(
        self, url: str, model: str, xs: np.ndarray, first_id: int, output_size: int, streams: int = 0
    ):
        self.url, self.model, self.xs, self.first_id = url, model, xs, first_id
        self.output_size, self.streams = output_size, streams
        self.latencies = np.zeros(xs.shape)

    def request(self, k: int):
        """Sequence k's one ModelInferRequest message; its input and flags are set per step."""
        from tritonclient.grpc import service_pb2

        request = service_pb2.ModelInferRequest(model_name=self.model, id=str(k))
        x = request.inputs.add(name="x", datatype="INT64")
        x.shape.extend([1, 1])
        request.outputs.add(name="y")
        request.parameters["sequence_id"].int64_param = self.first_id + k
        return request

    async def sequence(self, send, k: int) -> None:
        request = self.request(k)
        steps = self.xs.shape[1]
        for t in range(steps):
            request.parameters["sequence_start"].bool_param = t == 0
            request.parameters["sequence_end"].bool_param = t == steps - 1
            request.raw_input_contents[:] = [self.xs[k, t : t + 1].tobytes()]
            began = time.perf_counter()
            response = await send(k, request)
            self.latencies[k, t] = time.perf_counter() - began
        self.last_ys[k] = np.frombuffer(response.raw_output_contents[0], np.float32)

    async def _all(self) -> float:
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        async with grpc.aio.insecure_channel(self.url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            self.last_ys = np.zeros((len(self.xs), self.output_size), np.float32)
            if not self.streams:
                return await self._timed(lambda k, request: stub.ModelInfer(request))
            return await self._over_streams(stub)

    async def _timed(self, send) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(self.sequence(send, k) for k in range(len(self.xs))))
        return time.perf_counter() - start

    async def _over_streams(self, stub) -> float:
        loop = asyncio.get_running_loop()
        waiting: dict[str, asyncio.Future] = {}  # request id (the sequence) -> its answer
        queues = [asyncio.Queue() for _ in range(self.streams)]

        async def outgoing(queue):
            while (request := await queue.get()) is not None:
                yield request

        async def incoming(call):
            async for message in call:
                answer = waiting.pop(message.infer_response.id)
                if message.error_message:
                    answer.set_exception(RuntimeError(message.error_message))
                else:
                    answer.set_result(message.infer_response)

        calls = [stub.ModelStreamInfer(outgoing(queue)) for queue in queues]
        readers = [asyncio.create_task(incoming(call)) for call in calls]

        async def send(k: int, request):
            answer = waiting[request.id] = loop.create_future()
            queues[k % self.streams].put_nowait(request)
            return await answer

        try:
            return await self._timed(send)
        finally:
            for queue in queues:
                queue.put_nowait(None)
            for reader in readers:
                reader.cancel()

    def run(self) -> float:
        return asyncio.run(self._all())


def triton_load(
    model: Path,
    xs: np.ndarray,
    workdir: Path,
    backend: str,
    streams: int = 0,
    client: str = "python",
    queue_delay_us: int = 0,
) -> tuple[Load, np.ndarray]:
    """The load on tritonserver serving ``backend``'s repository, over ``streams`` bidirectional
    streams (0: unary calls) from ``client`` ("python": ``Client``, "cpp": triton_grpc_load.cc);
    returns it and every sequence's last y ``(S, O)``."""
    repo = workdir / f"repo_{backend}_{streams}_{client}"
    sequences = len(xs)
    flavour = {"backend": "c", "precision": "int8"} if backend == "c-int8" else {"backend": backend}
    deploy(
        model, "triton", repo, max_batch_size=sequences, max_candidate_sequences=sequences,
        max_queue_delay_us=queue_delay_us, **flavour,
    )  # fmt: skip
    executable = triton_grpc_client.build() if client == "cpp" else None
    with TritonServer(repo) as server:
        size = Stepper(model, chunk_model=False).info.output.size

        def load(first_id: int, inputs: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            if executable is None:
                python = Client(server.grpc_url, model.stem, inputs, first_id, size, streams)
                return python.run(), python.latencies, python.last_ys
            done = triton_grpc_client.run(
                executable, server.grpc_url, model.stem, inputs,
                streams=streams, first_id=first_id, output_size=size,
            )  # fmt: skip
            return done.seconds, done.latencies_s, done.last_ys

        load(1_000_000, xs[:, :20])  # warm up
        stub = children(server.process.pid)
        pids = {"tritonserver": server.process.pid, **{f"python stub {i}": p for i, p in enumerate(stub)}}
        with collector_off(), CpuMeter(pids) as meter:
            seconds, latencies, last_ys = load(1, xs)
    transport = f"{streams} gRPC stream{'s' if streams > 1 else ''}" if streams else "unary gRPC"
    label = f"Triton, {BACKEND_LABELS[backend]}, {transport}, {CLIENT_LABELS[client]}"
    result = Load(label, xs.size, seconds, latencies.ravel() * 1e3, meter.used, meter.others_cores)
    return result, last_ys


# --- the table --------------------------------------------------------------------------------------


def table(loads: list[Load], sequences: int, steps: int, queue_delay_us: int) -> list[str]:
    pool = loads[0]
    lines = [
        f"{sequences} concurrent sequences x {steps} steps (Triton: max_queue_delay_microseconds {queue_delay_us}):",
        "",
        "| path | stream-steps/s | p50 ms | p99 ms | CPU s per 1,000 stream-steps | other processes (cores) | steps/s / pool's |",
        "|---|---|---|---|---|---|---|",
    ]
    for load in loads:
        cpu = ", ".join(f"{name} {1000 * s / load.stream_steps:.3f}" for name, s in load.cpu_s.items())
        lines.append(
            f"| {load.label} | {load.steps_per_s:,.0f} | {load.percentile_ms(50):.2f} | {load.percentile_ms(99):.2f} "
            f"| {cpu} | {load.machine_busy_cores:.2f} | {load.steps_per_s / pool.steps_per_s:.3f}x |"
        )
    return lines


def goals(triton: Load) -> list[str]:
    rate, p99 = triton.steps_per_s, triton.percentile_ms(99)
    return [
        f"goal >= 5,000 stream-steps/s: {rate:,.0f} {'met' if rate >= 5000 else 'not met'}",
        f"goal p99 <= 50 ms: {p99:.1f} ms {'met' if p99 <= 50 else 'not met'}",
    ]


def _loads(parser: argparse.ArgumentParser, text: str) -> list[tuple[str, int, str]]:
    loads = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        backend, _, rest = item.partition(":")
        streams, _, client = rest.partition(":")
        client = client or ("cpp" if streams not in ("", "0") else "python")
        if backend not in BACKEND_LABELS or not streams.isdigit() or client not in CLIENT_LABELS:
            parser.error(
                f"--loads: expected FLAVOUR:STREAMS[:CLIENT] with FLAVOUR one of {', '.join(BACKEND_LABELS)} "
                f"and CLIENT one of {', '.join(CLIENT_LABELS)}, got {item!r}"
            )
        if client == "cpp" and streams == "0":
            parser.error(f"--loads: the C++ client sends over streams only (STREAMS >= 1), got {item!r}")
        loads.append((backend, int(streams), client))
    if not loads:
        parser.error("--loads: expected at least one FLAVOUR:STREAMS[:CLIENT]")
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--model", type=Path, help="an edgernn token model (default: the GRU 1x128 above)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    parser.add_argument(
        "--loads",
        default="c:1:cpp,c:4:python,python:0:python",
        help="the Triton loads, in order: FLAVOUR:STREAMS[:CLIENT] (STREAMS 0: unary calls; CLIENT cpp, the "
        "default with streams, or python); default c:1:cpp,c:4:python,python:0:python",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=1000,
        help="the oldest strategy's max_queue_delay_microseconds (edgernn deploy --max-queue-delay-us); default 1000",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="triton-load-") as scratch:
        workdir = Path(scratch)
        model = args.model or export_reference(workdir)
        xs = token_inputs(Stepper(model, chunk_model=False), args.sequences, args.steps)
        load_before = os.getloadavg()[0]
        slowest, slow_share = machine_steadiness()
        served = [
            triton_load(model, xs, workdir, backend, streams, client, args.max_queue_delay_us)
            for backend, streams, client in _loads(parser, args.loads)
        ]
        pool, pool_ys = pool_load(model, xs)
        loads = [pool, *(load for load, _ in served)]
        errors = [float(np.max(np.abs(ys - pool_ys))) for _, ys in served]
    lines = table(loads, args.sequences, args.steps, args.max_queue_delay_us)
    for load, error in zip(loads[1:], errors, strict=True):
        lines += ["", f"{load.label}:", *goals(load)]
        lines.append(f"every sequence's last y, Triton against the pool: largest difference {error:.2g}")
    lines.append(f"load average before the run: {load_before:.2f} on {os.cpu_count()} cores")
    lines.append(
        f"machine steadiness before the loads (a fixed piece of work per 100 ms, 5 s): slowest window "
        f"{slowest:.0%} of the median, {slow_share:.0%} of windows below 80%"
    )
    print("\n".join(lines))
    if args.json:
        doc = {
            "loads": [load.summary() for load in loads],
            "answer_errors": errors,
            "load_before": load_before,
            "steadiness": {"slowest_window": slowest, "windows_below_80_percent": slow_share},
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
