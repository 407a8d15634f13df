#!/usr/bin/env python3
"""reference-bot.py - the harness's own self-check of buildgrid-exec.sh, and a reference bot.

A minimal Remote Workers API bot (google.devtools.remoteworkers.v1test2.Bots) for BuildGrid 0.4.4,
written with the generated stubs that ship inside BuildGrid's venv, so it runs with the venv's
python (it re-executes itself with $BUILDGRID_VENV/bin/python when started with another one).
It is NOT cbuild's worker; it exists to prove the server works without the Rust code and to show,
in a few hundred lines, what a worker has to do against this server.

Usage:
  reference-bot.py bot URL [--capacity N] [--bot-id ID] [--delay S]   run a bot (JSON events on stdout)
  reference-bot.py selftest URL        end-to-end check against a running buildgrid-exec.sh server
  (or: tests/harness/buildgrid-exec.sh selftest DIR, which starts the server first)
URL is grpc://127.0.0.1:PORT as printed by buildgrid-exec.sh. --delay holds each lease S seconds
before running it (the selftest uses it to SIGKILL a bot that holds a lease).

Protocol facts, as BuildGrid 0.4.4 implements them (read from buildgrid/server/bots/service.py,
scheduler/impl.py, sql/models.py, utils/bots.py, scheduler/properties.py, and observed here):

Session
 * CreateBotSession(parent=INSTANCE (""), bot_session={bot_id, status=OK(1), worker}) returns the
   session with `name` = "<instance>/<uuid>" set by the server; every later call is
   UpdateBotSession(name=session.name, bot_session=<the session, name equal to `name`>) - a name
   mismatch is INVALID_ARGUMENT. bot_id must be set (INVALID_ARGUMENT otherwise) and should be
   stable per worker: CreateBotSession with a bot_id that already has a session closes that old
   session at once and requeues its leases (a restarted worker recovers its jobs immediately).
 * Scheduling properties are read ONLY from worker.devices[0].properties (the primary device), not
   from worker.properties. Only the scheduler's match keys count (here OSFamily, ISA,
   cbuild-protocol); a job matches a bot when the job's match properties are a subset of the bot's
   (the bot registers the powerset of its pairs). Wildcard keys (container-image,
   cbuild-build-image) are accepted in an Action's platform but never matched; any other key makes
   Execute fail with FAILED_PRECONDITION ("Unregistered platform property"). OSFamily may appear
   once per Action. The platform is Action.platform, else Command.platform.
 * Capacity: worker.configs entry {key: "capacity", value: "N"} (default 1) - at most N leases.
 * Send the whole session (worker, status, leases) on every UpdateBotSession, with the `version`
   string the server last returned. When it equals the server's version, the server skips lease
   reconciliation entirely and echoes the bot's leases back unchecked (completed leases are still
   processed); it reconciles - adds newly assigned leases, drops cancelled ones, validates lease
   states - only when they differ (every assignment and cancellation bumps the server's version;
   version "" always reconciles).
 * Both calls long-poll when the bot has free capacity and nothing changed: the server waits for
   an assignment up to 0.8 * min(gRPC deadline, bot-session-keepalive-timeout) (here 10 s), and
   not at all when that is below 3 s (NETWORK_TIMEOUT), i.e. a deadline under 3.75 s makes it a
   plain poll. Assignment wakes the waiting call at once (PostgreSQL LISTEN/NOTIFY). A call whose
   wait times out returns the session unchanged. The reference bot uses a 5 s deadline (4 s wait)
   and cancels the pending call as soon as one of its leases finishes, to report it at once
   (a cancelled call loses nothing: the server re-sends leases the bot did not acknowledge).
   CreateBotSession long-polls the same way before it returns the session; this bot gives it a
   3 s deadline so that it returns at once (the server then logs, at INFO, a harmless "BotSession
   expires in less time than timeout. No leases will be assigned.").
 * Keepalive: each call sets the session's expiry to now + bot-session-keepalive-timeout (10 s
   here; also returned as bot_session.expire_time). The reaper (every 1 s here) closes sessions
   past expiry: the bot row is deleted and every incomplete lease of it is requeued (n_tries+1)
   and assigned again, to another bot or to the same bot's next session. A bot that then calls
   UpdateBotSession again gets INVALID_ARGUMENT ("Bot does not exist while validating leases"):
   it must drop its leases (they belong to someone else now) and CreateBotSession again. A busy
   bot at full capacity gets an immediate answer, so it must pace its own heartbeats (this one:
   every 2 s) - well inside 10 s.
 * Until reaped, a dead bot with free capacity can still be assigned jobs (health = status OK and
   capacity > 0; expiry is not checked), which then wait for the reaper. To leave cleanly, send
   UpdateBotSession with status BOT_TERMINATING (4) (no new assignments), finish or fail the
   leases, then stop calling.
Leases
 * A lease arrives with id = the job name, state ACTIVE (BuildGrid assigns straight to ACTIVE: its
   DB state is "EXECUTING and assigned"), and payload = Any packing a build.bazel.remote.execution
   .v2.Action (type.googleapis.com/build.bazel.remote.execution.v2.Action; the Action is stored
   with the job). Older jobs may carry an Action Digest instead - handle both. PENDING is only
   seen from older servers: a bot turns PENDING into ACTIVE; it must never send PENDING back for a
   lease the server has as ACTIVE: at the next reconciliation (see `version`) that is an
   "Unsupported lease state transition" - DATA_LOSS, the whole session closed, all its leases
   requeued, the next call INVALID_ARGUMENT (observed). ACTIVE is the heartbeat ack.
 * Trailing metadata "executeoperationmetadata-bin" (one per lease) carries an
   ExecuteOperationMetadata (action digest, stage). Optional request metadata
   "partial-execution-metadata-<lease id>-bin" (an ExecutedActionMetadata) reports progress
   timestamps; the reference bot does not send it.
 * Completion: send the lease with state COMPLETED, status = google.rpc.Status (code 0 = OK when
   the action ran, whatever its exit code) and result = Any(ActionResult). The server stores an
   ExecuteResponse {result, status}, fills execution_metadata's queued/worker timestamps from its
   own records, puts the ActionResult in the ActionCache unless status != OK or the Action has
   do_not_cache, and (here, cache-failed-actions: false) not when exit_code != 0. The response no
   longer lists a completed lease (that is the acknowledgement); it may at once contain a new one
   (proactive fetch). Reporting an already completed lease again is ignored (logged) - unless the
   job was meanwhile retried onto this same bot, when it counts as that attempt's outcome.
 * Retry: a COMPLETED lease whose status code is in Scheduler.RETRYABLE_STATUS_CODES =
   (INTERNAL (13), UNAVAILABLE (14)) is requeued while n_tries < max-job-attempts (5 here); any
   other code completes the job with that status (observed: 5 attempts, then the Execute client
   gets the last INTERNAL status). A retried job keeps its lease id (the job name) and may come
   straight back to the same bot, even in the response that acknowledges the failed attempt: key
   "already running" on leases in progress, not on ids ever seen. A lost bot session counts as a
   try too; past max-job-attempts that path completes the job with ABORTED ("Job was retried N
   unsuccessfully").
 * Cancellation (CancelOperation on every operation of a job; the Execute stream then ends with
   an ExecuteResponse at once): the server bumps the bot's version and leaves the lease out of the
   session it returns at the bot's next call (observed 2 s later = this bot's heartbeat; a
   long-poll is not woken for it). A lease the bot works on that is missing from a response was
   cancelled or requeued elsewhere: stop it and do not report it. A bot must never set CANCELLED
   itself (DATA_LOSS, session closed).
gRPC status codes of the Bots service: INVALID_ARGUMENT (unknown bot, name mismatch, missing
bot_id), DATA_LOSS (illegal lease transition; session closed), CANCELLED (the bot cancelled its
own call), UNAVAILABLE / INTERNAL (server or database trouble: retry the same call).
"""
import argparse
import hashlib
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

try:
    import grpc
    from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
    from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
    from buildgrid._protos.google.devtools.remoteworkers.v1test2 import bots_pb2, bots_pb2_grpc, worker_pb2
    from buildgrid._protos.google.rpc import code_pb2, status_pb2
    from buildgrid._protos.google.longrunning import operations_pb2  # noqa: F401 (Operation type)
except ImportError:
    venv = os.environ.get("BUILDGRID_VENV", os.path.expanduser("~/.cache/cbuild-harness/buildgrid-venv"))
    py = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) != os.path.realpath(venv) and os.path.exists(py):
        os.execv(py, [py, *sys.argv])
    raise

INSTANCE = ""
PROPERTIES = {"OSFamily": "linux", "ISA": "x86-64", "cbuild-protocol": "1"}


def target(url):
    return url.split("://", 1)[-1]


def digest_of(data):
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


class Cas:
    """CAS through BatchReadBlobs/BatchUpdateBlobs (enough for small blobs; real workers use
    ByteStream for blobs above the server's max_batch_total_size_bytes, 4 MiB here)."""

    def __init__(self, channel):
        self.stub = re_grpc.ContentAddressableStorageStub(channel)

    def put(self, blobs):
        reqs = [re_pb2.BatchUpdateBlobsRequest.Request(digest=digest_of(b), data=b) for b in blobs]
        resp = self.stub.BatchUpdateBlobs(re_pb2.BatchUpdateBlobsRequest(instance_name=INSTANCE, requests=reqs))
        for r in resp.responses:
            if r.status.code != 0:
                raise RuntimeError(f"upload {r.digest.hash}: {r.status}")
        return [r.digest for r in reqs]

    def put_message(self, msg):
        return self.put([msg.SerializeToString()])[0]

    def get(self, digest):
        if digest.size_bytes == 0:
            return b""
        resp = self.stub.BatchReadBlobs(re_pb2.BatchReadBlobsRequest(instance_name=INSTANCE, digests=[digest]))
        r = resp.responses[0]
        if r.status.code != 0:
            raise RuntimeError(f"read {digest.hash}: {r.status}")
        return r.data

    def get_message(self, digest, cls):
        m = cls()
        m.ParseFromString(self.get(digest))
        return m


def emit(**event):
    event["t"] = round(time.time(), 3)
    print(json.dumps(event), flush=True)


# --- running one action ------------------------------------------------------------------------


def materialize(cas, directory, path):
    os.makedirs(path, exist_ok=True)
    for f in directory.files:
        p = os.path.join(path, f.name)
        with open(p, "wb") as out:
            out.write(cas.get(f.digest))
        os.chmod(p, 0o755 if f.is_executable else 0o644)
    for s in directory.symlinks:
        os.symlink(s.target, os.path.join(path, s.name))
    for d in directory.directories:
        materialize(cas, cas.get_message(d.digest, re_pb2.Directory), os.path.join(path, d.name))


def directory_message(cas, path, children):
    """The Directory proto of `path` (uploading its files), its subdirectories appended to children."""
    d = re_pb2.Directory()
    for name in sorted(os.listdir(path)):
        p = os.path.join(path, name)
        if os.path.islink(p):
            d.symlinks.add(name=name, target=os.readlink(p))
        elif os.path.isdir(p):
            sub = directory_message(cas, p, children)
            children.append(sub)
            d.directories.add(name=name, digest=digest_of(sub.SerializeToString()))
        else:
            data = open(p, "rb").read()
            cas.put([data])
            d.files.add(name=name, digest=digest_of(data), is_executable=os.access(p, os.X_OK))
    return d


def run_action(cas, action, bot_id, delay):
    """Executes `action`; returns (google.rpc.Status, ActionResult)."""
    meta = re_pb2.ExecutedActionMetadata(worker=bot_id)
    meta.worker_start_timestamp.GetCurrentTime()
    if delay:
        time.sleep(delay)
    command = cas.get_message(action.command_digest, re_pb2.Command)
    root = tempfile.mkdtemp(prefix="reference-bot-")
    try:
        meta.input_fetch_start_timestamp.GetCurrentTime()
        materialize(cas, cas.get_message(action.input_root_digest, re_pb2.Directory), root)
        meta.input_fetch_completed_timestamp.GetCurrentTime()
        cwd = os.path.join(root, command.working_directory)
        outputs = list(command.output_paths) or list(command.output_files) + list(command.output_directories)
        for o in outputs:  # REAPI: the worker creates the parent directories of every output path
            os.makedirs(os.path.dirname(os.path.join(cwd, o)) or cwd, exist_ok=True)
        env = {e.name: e.value for e in command.environment_variables}
        timeout = action.timeout.seconds or None
        meta.execution_start_timestamp.GetCurrentTime()
        try:
            proc = subprocess.run(list(command.arguments), cwd=cwd, env=env, capture_output=True, timeout=timeout)
            exit_code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except FileNotFoundError as e:
            exit_code, stdout, stderr = 127, b"", str(e).encode()
        except subprocess.TimeoutExpired as e:
            status = status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="action timed out")
            return status, re_pb2.ActionResult(exit_code=-1, stdout_raw=e.stdout or b"")
        meta.execution_completed_timestamp.GetCurrentTime()
        meta.output_upload_start_timestamp.GetCurrentTime()
        result = re_pb2.ActionResult(exit_code=exit_code)
        result.stdout_digest.CopyFrom(cas.put([stdout])[0])
        result.stderr_digest.CopyFrom(cas.put([stderr])[0])
        for o in outputs:
            p = os.path.join(cwd, o)
            if os.path.isfile(p) and not os.path.islink(p):
                data = open(p, "rb").read()
                result.output_files.add(path=o, digest=cas.put([data])[0], is_executable=os.access(p, os.X_OK))
            elif os.path.isdir(p):
                children = []
                tree = re_pb2.Tree(root=directory_message(cas, p, children), children=children)
                result.output_directories.add(path=o, tree_digest=cas.put_message(tree))
        meta.output_upload_completed_timestamp.GetCurrentTime()
        meta.worker_completed_timestamp.GetCurrentTime()
        result.execution_metadata.CopyFrom(meta)
        return status_pb2.Status(code=code_pb2.OK), result
    except Exception as e:  # infrastructure trouble: INTERNAL makes BuildGrid retry the job
        return status_pb2.Status(code=code_pb2.INTERNAL, message=f"reference-bot: {e}"), re_pb2.ActionResult()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the bot -----------------------------------------------------------------------------------


class Bot:
    HEARTBEAT = 2.0  # seconds between calls when the server does not long-poll (bot at capacity)
    DEADLINE = 5.0  # gRPC deadline of Create/UpdateBotSession: the server long-polls 0.8 * this

    def __init__(self, url, bot_id, capacity, delay):
        self.channel = grpc.insecure_channel(target(url))
        self.bots = bots_pb2_grpc.BotsStub(self.channel)
        self.cas = Cas(self.channel)
        self.bot_id, self.capacity, self.delay = bot_id, capacity, delay
        self.results = {}  # lease id -> (Status, ActionResult), filled by the lease threads
        self.running = set()  # lease ids being worked on or not yet acknowledged as completed
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self.terminating = False

    def worker(self):
        w = worker_pb2.Worker()
        dev = w.devices.add(handle=self.bot_id)
        for k, v in PROPERTIES.items():
            dev.properties.add(key=k, value=v)
        w.configs.add(key="capacity", value=str(self.capacity))
        return w

    def create(self):
        while True:
            try:
                s = bots_pb2.BotSession(bot_id=self.bot_id, status=bots_pb2.OK, worker=self.worker())
                # A deadline under 3.75 s: return at once instead of long-polling for a first lease.
                session = self.bots.CreateBotSession(
                    bots_pb2.CreateBotSessionRequest(parent=INSTANCE, bot_session=s), timeout=3.0
                )
                emit(bot=self.bot_id, event="session", name=session.name)
                return session
            except grpc.RpcError as e:
                emit(bot=self.bot_id, event="create-error", code=str(e.code()), details=e.details())
                time.sleep(1)

    def run_lease(self, lease_id, payload):
        action = re_pb2.Action()
        if payload.Is(re_pb2.Action.DESCRIPTOR):
            payload.Unpack(action)
        else:
            d = re_pb2.Digest()
            payload.Unpack(d)
            action = self.cas.get_message(d, re_pb2.Action)
        status, result = run_action(self.cas, action, self.bot_id, self.delay)
        with self.lock:
            if lease_id not in self.running:  # dropped by the server meanwhile: nothing to report
                return
            self.results[lease_id] = (status, result)
        emit(bot=self.bot_id, event="done", lease=lease_id, code=status.code, exit_code=result.exit_code)
        self.changed.set()

    def prepare(self, session):
        """The request's session: new leases started and ACTIVE, finished ones COMPLETED."""
        with self.lock:
            for lease in session.leases:
                if lease.state == bots_pb2.PENDING:
                    lease.state = bots_pb2.ACTIVE
                if lease.id in self.results:
                    status, result = self.results[lease.id]
                    lease.state = bots_pb2.COMPLETED
                    lease.status.CopyFrom(status)
                    lease.result.Pack(result)
            session.status = bots_pb2.BOT_TERMINATING if self.terminating else bots_pb2.OK
        return session

    def take_new_leases(self, session):
        ids = {lease.id for lease in session.leases}
        with self.lock:
            for lid in self.running - ids - set(self.results):
                # Gone from the server's list while we work on it: cancelled, or requeued for
                # someone else. A real worker kills the action here; this one drops its result.
                self.running.discard(lid)
                emit(bot=self.bot_id, event="dropped", lease=lid)
        for lease in session.leases:
            if lease.id not in self.running and lease.state in (bots_pb2.PENDING, bots_pb2.ACTIVE):
                self.running.add(lease.id)
                emit(bot=self.bot_id, event="lease", lease=lease.id, state=lease.state,
                     payload=lease.payload.type_url)
                threading.Thread(target=self.run_lease, args=(lease.id, lease.payload), daemon=True).start()

    def run(self):
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "terminating", True))
        session = self.create()
        self.take_new_leases(session)
        while True:
            self.changed.clear()
            req_session = self.prepare(bots_pb2.BotSession.FromString(session.SerializeToString()))
            sent_completed = {l.id for l in req_session.leases if l.state == bots_pb2.COMPLETED}
            req = bots_pb2.UpdateBotSessionRequest(name=req_session.name, bot_session=req_session)
            fut = self.bots.UpdateBotSession.future(req, timeout=self.DEADLINE)
            while not fut.done():
                if self.changed.wait(0.05) and not sent_completed:
                    fut.cancel()  # report the finished lease now instead of after the long poll
                    break
            try:
                session = fut.result()
            except grpc.FutureCancelledError:
                continue
            except grpc.RpcError as e:
                if self.terminating:  # asked to stop and the server cannot be told: just stop
                    emit(bot=self.bot_id, event="exit", code=str(e.code()))
                    return
                if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DATA_LOSS,
                                grpc.StatusCode.NOT_FOUND):
                    # The session is gone (reaped after the keepalive timeout, or closed): its
                    # leases were requeued for someone else. Start over.
                    emit(bot=self.bot_id, event="session-lost", code=str(e.code()), details=e.details())
                    with self.lock:
                        self.results.clear()
                        self.running.clear()  # (a real worker also stops what is still running)
                    session = self.create()
                    self.take_new_leases(session)
                elif e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    emit(bot=self.bot_id, event="update-error", code=str(e.code()), details=e.details())
                    time.sleep(0.5)
                continue
            with self.lock:
                for lid in sent_completed:  # acknowledged: the response no longer lists them
                    self.results.pop(lid, None)
                    self.running.discard(lid)  # a retry of the job may come back under the same id
                    emit(bot=self.bot_id, event="reported", lease=lid)
            if self.terminating and not session.leases and not self.results:
                emit(bot=self.bot_id, event="exit")
                return
            self.take_new_leases(session)
            busy = len(session.leases) >= self.capacity or self.terminating
            if busy and not self.changed.is_set():
                self.changed.wait(self.HEARTBEAT)


# --- the self-test -----------------------------------------------------------------------------


class BotProcess:
    def __init__(self, url, bot_id, capacity=1, delay=0):
        self.id = bot_id
        self.events = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "bot", url, "--bot-id", bot_id,
             "--capacity", str(capacity), "--delay", str(delay)],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()

    def wait_for(self, timeout=60, **match):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if all(e.get(k) == v for k, v in match.items()):
                        return e
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"bot {self.id}: no event {match} in {timeout} s: {self.events}")
                self.cond.wait(left)

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


def upload_action(cas, argv, platform, outputs=(), inputs=None, do_not_cache=False):
    root = re_pb2.Directory()
    blobs = []
    for name, data in sorted((inputs or {}).items()):
        root.files.add(name=name, digest=digest_of(data))
        blobs.append(data)
    command = re_pb2.Command(arguments=argv, output_paths=list(outputs))
    command.environment_variables.add(name="PATH", value="/usr/bin:/bin")
    p = re_pb2.Platform()
    for k, v in sorted(platform.items()):
        p.properties.add(name=k, value=v)
    action = re_pb2.Action(
        command_digest=digest_of(command.SerializeToString()),
        input_root_digest=digest_of(root.SerializeToString()),
        platform=p, do_not_cache=do_not_cache,
    )
    cas.put(blobs + [command.SerializeToString(), root.SerializeToString(), action.SerializeToString()])
    return digest_of(action.SerializeToString())


def execute(channel, action_digest, timeout=120):
    """Execute + follow the operation stream; returns (ExecuteResponse, operation name)."""
    stub = re_grpc.ExecutionStub(channel)
    req = re_pb2.ExecuteRequest(instance_name=INSTANCE, action_digest=action_digest, skip_cache_lookup=True)
    for op in stub.Execute(req, timeout=timeout):
        if op.done:
            if op.HasField("error"):
                raise AssertionError(f"operation {op.name} failed: {op.error}")
            resp = re_pb2.ExecuteResponse()
            op.response.Unpack(resp)
            return resp, op.name
    raise AssertionError("operation stream ended before done")


def selftest(url):
    channel = grpc.insecure_channel(target(url))
    cas = Cas(channel)
    platform = dict(PROPERTIES, **{"container-image": "docker://x@sha256:" + "0" * 64})
    nonce = uuid.uuid4().hex
    timings = {}
    bots = []
    try:
        # 1. One bot (capacity 2), one action: inputs materialised, stdout + an output file back.
        a = BotProcess(url, f"ref-a-{nonce[:8]}", capacity=2)
        bots.append(a)
        a.wait_for(event="session")
        time.sleep(0.5)  # let it enter its long poll
        digest = upload_action(
            cas, ["/bin/sh", "-c", 'cat in.txt; echo "$0"; printf result-$0 > out/result.txt', nonce],
            platform, outputs=["out/result.txt"], inputs={"in.txt": b"input-file\n"},
        )
        t0 = time.time()
        resp, op = execute(channel, digest)
        t1 = time.time()
        lease = a.wait_for(event="lease")
        timings["assignment_latency_s"] = round(lease["t"] - t0, 3)
        timings["execute_roundtrip_s"] = round(t1 - t0, 3)
        assert resp.status.code == 0, resp.status
        r = resp.result
        assert r.exit_code == 0, r
        out = cas.get(r.stdout_digest).decode()
        assert out == f"input-file\n{nonce}\n", out
        files = {f.path: cas.get(f.digest) for f in r.output_files}
        assert files == {"out/result.txt": f"result-{nonce}".encode()}, files
        assert r.execution_metadata.worker == a.id, r.execution_metadata
        assert lease["payload"].endswith("build.bazel.remote.execution.v2.Action"), lease
        print(f"selftest: action ran on {a.id}, stdout and output file correct (operation {op})", file=sys.stderr)

        # The ActionCache now holds the result (status OK, exit 0).
        ac = re_grpc.ActionCacheStub(channel)
        cached = ac.GetActionResult(re_pb2.GetActionResultRequest(instance_name=INSTANCE, action_digest=digest))
        assert cached.exit_code == 0 and cached.stdout_digest == r.stdout_digest

        # 2. Capacity 2: two sleeping actions run on the one bot at the same time.
        ds = [upload_action(cas, ["/bin/sh", "-c", "sleep 1; echo $0", f"{nonce}-{i}"], platform) for i in (1, 2)]
        results = [None, None]
        ts = [threading.Thread(target=lambda i=i: results.__setitem__(i, execute(channel, ds[i])[0])) for i in (0, 1)]
        tc = time.time()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        timings["two_1s_actions_capacity_2_s"] = round(time.time() - tc, 3)
        assert all(x.status.code == 0 and x.result.exit_code == 0 for x in results), results
        leases = [e for e in a.events if e["event"] == "lease"]
        dones = [e for e in a.events if e["event"] == "done"]
        assert len(leases) == 3, leases
        assert leases[2]["t"] < dones[1]["t"], "the second lease came only after the first finished"
        print("selftest: capacity 2 ran two actions concurrently on one bot", file=sys.stderr)

        # 3. A failing action: exit code comes back, status OK, and it is not cached.
        df = upload_action(cas, ["/bin/sh", "-c", "echo oops >&2; exit 3", nonce], platform)
        resp, _ = execute(channel, df)
        assert resp.status.code == 0 and resp.result.exit_code == 3, resp
        assert cas.get(resp.result.stderr_digest) == b"oops\n"
        try:
            ac.GetActionResult(re_pb2.GetActionResultRequest(instance_name=INSTANCE, action_digest=df))
            raise AssertionError("a failed action was cached")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e

        # 4. An unregistered platform property is refused by Execute.
        try:
            execute(channel, upload_action(cas, ["true", nonce], dict(platform, bogus="1")))
            raise AssertionError("an unregistered platform property was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
        # 5. Retry: a lease completed with INTERNAL (here: an input blob missing from CAS) is
        #    requeued - under the same lease id - until max-job-attempts (5), then completes with
        #    the last INTERNAL status.
        root = re_pb2.Directory()
        root.files.add(name="x", digest=digest_of(f"never uploaded {nonce}".encode()))
        command = re_pb2.Command(arguments=["true", nonce])
        p = re_pb2.Platform()
        p.properties.add(name="OSFamily", value="linux")
        action = re_pb2.Action(command_digest=digest_of(command.SerializeToString()),
                               input_root_digest=digest_of(root.SerializeToString()), platform=p)
        cas.put([command.SerializeToString(), root.SerializeToString(), action.SerializeToString()])
        tr = time.time()
        resp, op = execute(channel, digest_of(action.SerializeToString()))
        timings["five_internal_attempts_s"] = round(time.time() - tr, 3)
        assert resp.status.code == code_pb2.INTERNAL, resp.status
        job = op.split("/")[-1]
        last = [e for e in a.events if e["event"] == "lease"][-1]["lease"]
        tries = [e for e in a.events if e["event"] == "lease" and e["lease"] == last]
        assert len(tries) == 5, (job, tries)
        print(f"selftest: INTERNAL was retried: {len(tries)} attempts under lease id {last}", file=sys.stderr)
        a.terminate()  # graceful: BOT_TERMINATING, then exit
        a.wait_for(event="exit", timeout=20)

        # 6. A bot SIGKILLed while holding a lease: the lease goes to a second bot.
        k = BotProcess(url, f"ref-k-{nonce[:8]}", capacity=1, delay=600)
        bots.append(k)
        k.wait_for(event="session")
        dk = upload_action(cas, ["/bin/sh", "-c", "echo survived $0", nonce], platform)
        box = {}
        th = threading.Thread(target=lambda: box.setdefault("r", execute(channel, dk, timeout=180)))
        th.start()
        held = k.wait_for(event="lease")
        b = BotProcess(url, f"ref-b-{nonce[:8]}", capacity=1)
        bots.append(b)
        b.wait_for(event="session")
        time.sleep(1)
        tk = time.time()
        k.kill()
        got = b.wait_for(event="lease", lease=held["lease"], timeout=60)
        th.join(60)
        timings["requeue_after_sigkill_s"] = round(got["t"] - tk, 3)
        resp = box["r"][0]
        assert resp.status.code == 0 and resp.result.exit_code == 0, resp
        assert cas.get(resp.result.stdout_digest).decode() == f"survived {nonce}\n"
        assert resp.result.execution_metadata.worker == b.id, resp.result.execution_metadata
        print(f"selftest: lease {held['lease']} of SIGKILLed {k.id} was retried on {b.id}", file=sys.stderr)
        b.terminate()
    finally:
        for bp in bots:
            if bp.proc.poll() is None:
                bp.kill()
    print(json.dumps(timings))
    print("selftest: OK", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description="BuildGrid reference bot and harness self-test")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bot")
    b.add_argument("url")
    b.add_argument("--capacity", type=int, default=2)
    b.add_argument("--bot-id", default=f"reference-bot-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    b.add_argument("--delay", type=float, default=0)
    s = sub.add_parser("selftest")
    s.add_argument("url")
    args = ap.parse_args()
    if args.cmd == "bot":
        Bot(args.url, args.bot_id, args.capacity, args.delay).run()
    else:
        selftest(args.url)


if __name__ == "__main__":
    main()
