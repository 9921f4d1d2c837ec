"""Chief and workers on Keras Tuner's own gRPC oracle service, with the timeouts it lacks.

The chief serves the oracle (keras-tuner's `OracleServicer`) and waits until the search is over;
workers run trials and talk to it through keras-tuner's `OracleClient`, configured as keras-tuner
expects by KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT. What we add:
a worker whose chief cannot be reached for `timeout` seconds (gone, or never there) stops with
one clear error instead of waiting an hour as keras-tuner's client does, while a chief that is
merely busy thinking is waited for; the chief watches the worker processes it started and
hands a dead one's trial to the others (failing clearly only if work is left undone); a remote
worker restarted with the same --id takes its unfinished trial back; port 0 picks a free port.

Leases (workers on other machines, whose process the chief cannot watch). Every call of a
worker names it in gRPC metadata (`edgepipe-tuner-bin`), and during a search a daemon thread
sends a tiny GetSpace every `heartbeat` seconds without waiting for the answer. The chief notes
when each worker was last heard in a server interceptor, which runs as a call *arrives*, before
it queues for the one server thread: a chief busy thinking (bayesian) still hears everyone. A
worker silent longer than the lease (default 3 x heartbeat + timeout) has its trial handed back
to the queue (`oracle.expire` → `oracle.requeue`) with one warning line, and the chief stops
waiting for it. Workers asking for a trial while others still run one wait (IDLE) instead of
being told to stop, so a handed-back trial finds a worker (see oracle.py).
A worker that was only slow or cut off and comes back: its late update/end for a trial it no
longer holds is ignored with a log line (it may have run again elsewhere; accepting it would
count the trial twice) and the worker just asks for its next trial; at worst a trial runs twice,
its first result dropped. Workers that never name themselves (a plain keras-tuner client) get
no lease: keras-tuner's behaviour.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Callable, Sequence

import grpc
from keras_tuner.src import errors as kt_errors
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief, oracle_client
from keras_tuner.src.engine import trial as kt_trial

from pipeline.errors import UserError

log = logging.getLogger("edgepipe")

ENV_ID, ENV_IP, ENV_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
TUNER_KEY = "edgepipe-tuner-bin"  # gRPC metadata naming the calling worker (-bin: any bytes)
TOKEN_KEY = "edgepipe-token-bin"  # gRPC metadata: the search's shared token
#: where chief and workers read the shared token when --token-file is not given (never a
#: command-line value: any user of the machine can read process lists)
TOKEN_ENV = "EDGEPIPE_NAS_TOKEN"
MIN_TOKEN = 16  # characters: a token anyone could guess protects nothing
HEARTBEAT_S = 10.0  # a worker proves it is alive this often during a search


def read_token(token_file: str | os.PathLike | None) -> str | None:
    """The shared token: the first line of `token_file`, else $EDGEPIPE_NAS_TOKEN, else None."""
    if token_file is not None:
        try:
            text = Path(token_file).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--token-file {token_file}: cannot read it "
                            f"({getattr(e, 'strerror', None) or type(e).__name__})") from None
        token, where = (text.splitlines() or [""])[0].strip(), f"--token-file {token_file}"
    elif os.environ.get(TOKEN_ENV) is not None:
        token, where = os.environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    else:
        return None
    if len(token) < MIN_TOKEN:
        raise UserError(f"{where}: the nas token has {len(token)} characters; use at least "
                        f"{MIN_TOKEN} random ones (e.g. `openssl rand -hex 16 > token`)")
    return token


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def lease_for(heartbeat: float = HEARTBEAT_S, timeout: float = 60.0) -> float:
    """Seconds a worker may stay silent before the chief hands its trial to another: three
    missed heartbeats plus the time a worker allows itself to reach the chief."""
    return 3 * heartbeat + timeout


class ChiefUnreachable(UserError, kt_errors.FatalError):
    """The chief did not answer in time (a FatalError, so keras-tuner does not retry a trial)."""


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' → (host, port), or a UserError."""
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"Expected a chief address HOST:PORT (port 0-65535). Received: {text!r}")
    return host.strip("[]"), int(port)


def worker_env(address: str, tuner_id: str) -> dict[str, str]:
    """keras-tuner's environment contract for a worker of the chief at `address`."""
    host, port = parse_address(address)
    return {ENV_ID: tuner_id, ENV_IP: host, ENV_PORT: str(port)}


class _Stub:
    """OracleStub whose calls fail clearly when the chief cannot be reached.

    Before each call the channel must connect within `timeout` (a chief that is gone or was
    never there); the call itself may then take up to `call_timeout` (a busy chief: a bayesian
    oracle thinks for seconds, and the chief answers one worker at a time). A connection that
    breaks during a call fails at once.
    """

    def __init__(self, address: str, timeout: float, call_timeout: float | None = None,
                 tuner_id: str | None = None, token: str | None = None, role: str = "nas"):
        self.address, self.timeout, self.answered, self.role = address, timeout, False, role
        self.call_timeout = call_timeout or max(600.0, 10 * timeout)
        self.metadata = (((TUNER_KEY, tuner_id.encode()),) if tuner_id else ()) + (
            ((TOKEN_KEY, token.encode()),) if token else ())
        self._channel = grpc.insecure_channel(address)
        self._stub = protos.get_service_grpc().OracleStub(self._channel)

    def beat(self) -> grpc.Future:
        """One heartbeat, not waited for: the chief counts it when it arrives. Not queued
        while the channel is down (wait_for_ready=False): an unreachable chief fails the beat
        at once with UNAVAILABLE, so the worker can say so; a busy one answers late."""
        return self._stub.GetSpace.future(protos.get_service().GetSpaceRequest(),
                                          timeout=self.timeout, wait_for_ready=False,
                                          metadata=self.metadata)

    def __getattr__(self, name: str) -> Callable:
        method = getattr(self._stub, name)

        def call(request, **kwargs):
            try:
                grpc.channel_ready_future(self._channel).result(timeout=self.timeout)
            except grpc.FutureTimeoutError:
                raise self._unreachable(name) from None
            kwargs.update(timeout=self.call_timeout, wait_for_ready=False,
                          metadata=self.metadata)
            try:
                response = method(request, **kwargs)
            except grpc.RpcError as e:
                raise self._error(name, e) from None
            self.answered = True
            return response

        return call

    def _unreachable(self, call: str) -> ChiefUnreachable:
        if not self.answered:
            return ChiefUnreachable(
                f"the {self.role} chief at {self.address} did not answer within "
                f"{self.timeout:g}s: start `edgepipe nas RECIPE --chief` there first, or check "
                f"the address and the firewall")
        return ChiefUnreachable(
            f"the {self.role} chief at {self.address} stopped answering (unreachable for "
            f"{self.timeout:g}s at {call}): it finished or died; this worker stops (a result it "
            f"held was not recorded and will run again when the chief resumes)")

    def _error(self, call: str, e: grpc.RpcError) -> ChiefUnreachable:
        code = e.code() if hasattr(e, "code") else None
        if code == grpc.StatusCode.UNAVAILABLE:
            return self._unreachable(call)
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return ChiefUnreachable(f"the {self.role} chief at {self.address} refused this "
                                    f"worker: "
                                    f"{e.details()}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ChiefUnreachable(f"the {self.role} chief at {self.address} is connected but "
                                    f"did not "
                                    f"reply to {call} within {self.call_timeout:g}s")
        details = e.details() if hasattr(e, "details") else str(e)
        return ChiefUnreachable(f"the {self.role} chief at {self.address} failed on {call}: "
                                f"{code.name if code else 'error'}: {details}")


class RemoteOracle(oracle_client.OracleClient):
    """keras-tuner's OracleClient with a deadline on every call."""

    def __init__(self, oracle, address: str, tuner_id: str, timeout: float,
                 token: str | None = None, role: str = "nas"):
        self._oracle = oracle
        self.stub = _Stub(address, timeout, tuner_id=tuner_id, token=token, role=role)
        self.tuner_id = tuner_id
        self.multi_worker = False
        self.should_report = True


def remote(address: str, tuner_id: str, timeout: float, token: str | None = None,
           role: str = "nas") -> Callable:
    """For EdgeTuner(remote=...): wraps the tuner's local oracle into a RemoteOracle."""
    return lambda oracle: RemoteOracle(oracle, address, tuner_id, timeout, token, role)


class Heartbeat:
    """While open, a daemon thread tells the chief every `every` seconds that this worker lives
    (`_Stub.beat`). It never waits for the chief and never raises: the worker's own calls report
    a lost chief (ChiefUnreachable); a failing beat is logged once per run of failures."""

    def __init__(self, stub: _Stub, tuner_id: str, every: float = HEARTBEAT_S):
        self.stub, self.tuner_id, self.every = stub, tuner_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{tuner_id}",
                                        daemon=True)
        self._pending: list[grpc.Future] = []
        self._failing = False

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        for f in self._pending:
            f.cancel()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._pending = [f for f in self._pending if not self._done(f)]
            self._pending.append(self.stub.beat())

    def _done(self, f: grpc.Future) -> bool:
        if not f.done():
            return False
        if f.cancelled():
            return True
        e = f.exception()
        if e is None:
            if self._failing:
                log.info("[%s %s] heartbeats reach the chief again", self.stub.role,
                         self.tuner_id)
            self._failing = False
        elif not self._failing and e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            # DEADLINE_EXCEEDED: a busy chief answers late, but it heard the beat arrive
            self._failing = True
            log.warning("[%s %s] heartbeat to the chief at %s failed (%s); the trial goes on, "
                        "but the chief hands it to another worker if this lasts", self.stub.role,
                        self.tuner_id, self.stub.address, e.code().name)
        return True


def check_same_search(remote_oracle, key_name: str, key: str) -> None:
    """The chief must run the search this worker was configured for (same recipe settings)."""
    space = remote_oracle.get_space()
    theirs = space.values.get(key_name)
    if theirs != key:
        raise UserError(f"this worker's search (key {key[:12]}) differs from the chief's "
                        f"(key {str(theirs)[:12]}): start workers with the same recipe and "
                        f"library versions as the chief")


def _caller(metadata) -> str | None:
    """The worker named in a call's metadata (see TUNER_KEY), or None."""
    for key, value in metadata or ():
        if key == TUNER_KEY:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None


class _Token(grpc.ServerInterceptor):
    """Refuses (UNAUTHENTICATED) every call that does not carry the search's shared token; runs
    before anything else hears of the call. The comparison takes the same time for any guess."""

    REFUSED = (f"a missing or wrong token; give workers the chief's token (--token-file FILE or "
               f"${TOKEN_ENV})")

    def __init__(self, token: str):
        self.token = token.encode()

    def intercept_service(self, continuation, details):
        import hmac

        given = next((v for k, v in details.invocation_metadata or () if k == TOKEN_KEY), b"")
        if hmac.compare_digest(given if isinstance(given, bytes) else given.encode(), self.token):
            return continuation(details)
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: context.abort(grpc.StatusCode.UNAUTHENTICATED, self.REFUSED))


class _Heard(grpc.ServerInterceptor):
    """When each worker was last heard from. Runs as a call arrives, on gRPC's polling thread
    (not the one busy server thread), so a chief that is thinking still hears heartbeats."""

    def __init__(self):
        self.last: dict[str, float] = {}

    def intercept_service(self, continuation, details):
        who = _caller(details.invocation_metadata)
        if who is not None:
            self.last[who] = time.monotonic()
        return continuation(details)

    def silence(self, tuner_id: str) -> float | None:
        """Seconds since `tuner_id` was heard, None if it never named itself."""
        t = self.last.get(tuner_id)
        return None if t is None else time.monotonic() - t


class _Servicer(oracle_chief.OracleServicer):
    """keras-tuner's servicer, telling the oracle who reports a result (a late report from a
    worker whose trial was handed back is ignored, see `EdgeOracleMixin.holds`)."""

    def UpdateTrial(self, request, context):
        trial = self.oracle.update_trial(request.trial_id, request.metrics, step=request.step,
                                         tuner_id=_caller(context.invocation_metadata()))
        if trial is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no trial {request.trial_id!r}")
        return protos.get_service().UpdateTrialResponse(trial=trial.to_proto())

    def EndTrial(self, request, context):
        trial = kt_trial.Trial.from_proto(request.trial)
        self.oracle.end_trial(trial, tuner_id=_caller(context.invocation_metadata()))
        return protos.get_service().EndTrialResponse()


def _unlocking(oracle, method: Callable) -> Callable:
    """A servicer method that frees the oracle's lock if the oracle raised while holding it:
    keras-tuner's `synchronized` releases without try/finally, so one failed request (a bayesian
    proposal that errs, a full disk on save) would leave every later call, and the chief's own
    wait loop, blocked for ever."""
    from keras_tuner.src.engine import oracle as kt_oracle

    def call(request, context):
        try:
            return method(request, context)
        except BaseException:
            if kt_oracle.THREADS[oracle] == threading.current_thread().name:
                kt_oracle.THREADS[oracle] = None
                kt_oracle.LOCKS[oracle].release()
            raise

    return call


class Chief:
    """Serves `oracle` over gRPC at `bind` ("HOST:PORT"; port 0 picks a free one). A worker
    silent for `lease` seconds is presumed gone (None: never). With a `token`, every call must
    carry it; an address beyond loopback needs one (anyone reaching the port could drive the
    search: keras-tuner's service has no authentication of its own)."""

    def __init__(self, oracle, bind: str, lease: float | None = lease_for(),
                 token: str | None = None, role: str = "nas"):
        self.role = role
        host, port = parse_address(bind)
        if token is None and not is_loopback(host):
            raise UserError(f"the nas chief would listen on {host}:{port}, beyond this machine, "
                            f"without a token; give it one with --token-file FILE or "
                            f"${TOKEN_ENV} (the same for every worker), or keep the default "
                            f"loopback address")
        self.oracle, self.lease = oracle, lease
        self.heard = _Heard()
        self.servicer = _Servicer(oracle)
        for name in ("GetSpace", "UpdateSpace", "CreateTrial", "UpdateTrial", "EndTrial",
                     "GetTrial", "GetBestTrials"):
            setattr(self.servicer, name, _unlocking(oracle, getattr(self.servicer, name)))
        # no SO_REUSEPORT: a second chief on a busy port must fail, not share it silently
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=1),
                                  interceptors=([_Token(token)] if token else []) + [self.heard],
                                  options=[("grpc.so_reuseport", 0)])
        protos.get_service_grpc().add_OracleServicer_to_server(self.servicer, self.server)
        try:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise UserError(f"the nas chief cannot listen on {host}:{port} (port in use or "
                            f"address not on this machine); pick another --address")
        self.host = host
        self.server.start()

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "[::]") else self.host
        return f"{host}:{self.port}"

    def finished(self) -> bool:
        """Every tuner that asked was told to stop, and no trial is running."""
        return self.servicer.stop_triggered and oracle_chief.exit_chief(self.oracle)

    def expire_silent(self) -> dict[str, str]:
        """Hand back the trials of workers silent longer than the lease; {tuner id: what}."""
        out = {}
        if self.lease is None:
            return out
        for tuner_id, tid, seconds in self.oracle.expire(self.heard.silence, self.lease):
            out[tuner_id] = f"went silent ({seconds:.1f}s without a heartbeat)"
            log.warning("[%s] worker %s silent for %.1fs (lease %gs): %s", self.role, tuner_id,
                        seconds,
                        self.lease, f"trial {tid} goes back to the queue" if tid else
                        "it held no trial; the chief stops waiting for it")
        return out

    def wait(self, workers: Sequence["LocalWorker"] = (), remote_workers: bool = False,
             poll: float = 0.25, notice_every: float = 60.0) -> None:
        """Until the search is over: all local workers exited (and, with remote workers, every
        worker was told to stop). A local worker that dies, or any worker silent longer than the
        lease, hands its trial back to the oracle, so the others run it; if none is left to run
        it, this raises."""
        last_notice = time.time()
        dead: dict[str, str] = {}  # tuner id → how it ended
        silent: dict[str, str] = {}
        try:
            while True:
                self.watch(workers, dead, silent)
                local_done = all(w.returncode is not None for w in workers)
                if local_done and (not remote_workers or self.finished()):
                    break
                if remote_workers and time.time() - last_notice > notice_every:
                    last_notice = time.time()
                    if not self.oracle.ongoing_trials:
                        log.info("[nas] chief waiting for workers at %s:%d", self.host, self.port)
                time.sleep(poll)
        finally:
            for w in workers:
                w.stop()
        left = list(self.oracle._retry_queue) + [t.trial_id for t in
                                                 self.oracle.ongoing_trials.values()]
        gone = {**silent, **dead}
        if gone and (left or not self.servicer.stop_triggered):
            who = "; ".join(f"{k} {v}" for k, v in gone.items())
            what = (f"trials {', '.join(sorted(left))} did not finish" if left else
                    f"{len(self.oracle.trials)} of {self.oracle.max_trials} trials were started")
            how = "died or went silent" if silent else "died"
            raise UserError(f"nas workers {how} before the search ended ({who}); {what}: run "
                            f"again to finish the search (finished trials are kept)")

    def watch(self, workers: Sequence["LocalWorker"], dead: dict[str, str],
              silent: dict[str, str]) -> None:
        """One look at the workers: a local worker that died since the last look (added to
        `dead`: tuner id → how it ended), or any worker silent longer than the lease (added to
        `silent`), hands its trial back to the oracle's queue."""
        for w in workers:
            if w.returncode not in (None, 0) and w.tuner_id not in dead:
                dead[w.tuner_id] = w.ending()
                tid = self.oracle.requeue(w.tuner_id)
                log.warning("[%s] worker %s %s; %s (log: %s)", self.role, w.tuner_id,
                            dead[w.tuner_id], f"trial {tid} goes back to the queue"
                            if tid else "it held no trial", w.log_path)
        silent.update(self.expire_silent())

    def stop(self) -> None:
        self.server.stop(grace=1).wait(5)


class LocalWorker:
    """A worker process started by the chief on this host; output goes to `log_path`."""

    def __init__(self, tuner_id: str, command: list[str], log_path: Path, env: dict[str, str]):
        self.tuner_id, self.log_path = tuner_id, Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env={**os.environ, **env})

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def ending(self) -> str:
        rc = self.proc.poll()
        if rc is not None and rc < 0:
            return f"was killed (signal {-rc})"
        return f"failed (exit {rc}): {self.last_line()}"

    def last_line(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                     if ln.strip()]
        except OSError:
            return "no log"
        errors = [ln for ln in lines if ln.startswith("error:")]
        return (errors or lines or ["no output"])[-1]

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
