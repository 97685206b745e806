#!/usr/bin/env python3
"""Side-by-side benchmark of media-offload, s3_media_upload 1.7.0 and rclone.

Run it through bench/run, which installs and starts what this needs
(PostgreSQL, the Python tool, rclone, the S3 server) and builds
media-offload. Standard library only.

Steps (each on the same generated data, the same S3 server on loopback):
  upload-mix    `upload --delete` of a realistic media store
  upload-small  the same with many small files (per-file overhead)
  update-db     homeserver DB -> cache.db, at several row counts
  check-deleted cache.db rows against the media store, same row counts
  check-deleted-daily  the same on a cache.db where 99% of rows are known
                deleted (the daily case after offloading: the day's new rows
                at the end of the table), a few pulled back
  purge         `purge --remote-older-than 1d` of that many remote media, each
                with a thumbnail, files on disk and objects in the S3 server
                (media-offload only: the Python tool has no purge)
  copy          the realistic media store's objects from one S3 server to a
                second one: `copy` (what the database names) against
                `rclone copy` of the whole bucket (server CPU: both servers')

Every run is timed: wall time here, CPU time and peak RSS of the tool by
GNU time. The S3 server's CPU time and the machine's other CPU use during the
run are recorded too, so a disturbed run can be recognised. Results go to
target/bench/results.json and, as Markdown tables, target/bench/results.md.
"""

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
BUCKET = "bench"
ACCESS_KEY = "benchaccess"
SECRET_KEY = "benchsecret-benchsecret"
DAY_MS = 86_400_000

# Thumbnail file names as Synapse writes them (width-height-type-subtype-method).
IMAGE_THUMBS = [
    ("32-32-image-jpeg-crop", 1_000, 4_000),
    ("96-96-image-jpeg-crop", 3_000, 10_000),
    ("320-240-image-jpeg-scale", 12_000, 45_000),
    ("640-480-image-jpeg-scale", 35_000, 140_000),
]
ORIGINS = ["matrix.org", "example.com", "chat.example.net", "hs.example.org", "kde.org", "mozilla.org"]

# What a data set holds: (count, kind, min bytes, max bytes, thumbnails).
# Sizes are log-uniform between min and max.
PROFILES = {
    "full": {
        "mix": [
            (3_500, "image", 20_000, 800_000, True),  # photos and screenshots, 4 thumbnails each
            (2_240, "file", 10_000, 1_000_000, False),  # voice messages, PDFs, stickers
            (250, "video", 1_000_000, 20_000_000, False),
            (3, "big", 110_000_000, 240_000_000, False),
        ],
        "small": [(20_000, "file", 5_000, 100_000, False)],
        "rows": [10_000, 100_000, 1_000_000],
        "runs": 3,
    },
    "smoke": {
        "mix": [
            (20, "image", 20_000, 800_000, True),
            (10, "file", 10_000, 1_000_000, False),
            (2, "video", 1_000_000, 3_000_000, False),
            (1, "big", 9_000_000, 9_000_001, False),  # above the 8 MiB multipart threshold
        ],
        "small": [(200, "file", 5_000, 100_000, False)],
        "rows": [1_000, 5_000],
        "runs": 1,
    },
}
UPLOAD_TOOLS = ["media-offload", "s3_media_upload", "rclone"]
DB_TOOLS = ["media-offload", "s3_media_upload"]
STEPS = ["upload-mix", "upload-small", "update-db", "check-deleted", "check-deleted-daily", "purge", "copy"]
# The one thumbnail of each purged media: (file name, width, height, type, method).
PURGE_THUMB = ("96-96-image-jpeg-crop", 96, 96, "image/jpeg", "crop")
COPY_TOOLS = ["media-offload", "rclone"]


class BenchError(Exception):
    pass


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_uniform(rng, low, high):
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def fs_id(rng):
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(rng.choice(letters) for _ in range(24))


# ------------------------------------------------------------------ PostgreSQL ---
class Postgres:
    """The throwaway cluster scripts/test-services.sh started."""

    def __init__(self):
        self.socket = os.environ["MO_TEST_PG_SOCKET"]
        self.port = os.environ["MO_TEST_PG_PORT"]
        self.user = os.environ["MO_TEST_PG_SUPERUSER"]

    def psql(self, db, sql=None, stdin=None):
        cmd = ["psql", "-h", self.socket, "-p", self.port, "-U", self.user, "-d", db,
               "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        if sql is not None:
            cmd += ["-c", sql]
        out = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
        if out.returncode != 0:
            raise BenchError(f"psql on {db}: {out.stderr.decode(errors='replace').strip()}")
        return out.stdout.decode()

    def fresh_database(self, name):
        self.psql("postgres", f"DROP DATABASE IF EXISTS {name}")
        self.psql("postgres", f"CREATE DATABASE {name}")
        self.psql(name, synapse_schema())

    def database_yaml(self, name):
        # psycopg2 keyword arguments, as s3_media_upload reads them; unix socket.
        return f"host: {self.socket}\nport: {self.port}\nuser: {self.user}\ndbname: {name}\n"

    def version(self):
        return self.psql("postgres", "SHOW server_version").strip()


def synapse_schema():
    """Synapse's media tables, from the schema the integration tests use."""
    text = (ROOT / "tests" / "it" / "common" / "synapse_schema.rs").read_text()
    found = re.search(r'SYNAPSE_MEDIA_SCHEMA_POSTGRES: &str = r#"(.*?)"#;', text, re.S)
    if not found:
        raise BenchError("could not find SYNAPSE_MEDIA_SCHEMA_POSTGRES in tests/it/common/synapse_schema.rs")
    return found.group(1)


# ------------------------------------------------------------------ S3 server ---
class Server:
    """An S3 server on loopback, started afresh (empty) for every run."""

    def __init__(self, kind, rclone_env, name="bench"):
        self.kind = kind
        self.name = name  # its rclone remote; also names its folder and log
        self.proc = None
        self.port = None
        self.root = WORK / ("s3-root" if name == "bench" else f"s3-root-{name}")
        self.log = WORK / (f"{kind}.log" if name == "bench" else f"{kind}-{name}.log")
        self.rclone_env = rclone_env

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def command(self):
        if self.kind == "s3s-fs":
            return [os.environ["BENCH_S3S_FS"], "--host", "127.0.0.1", "--port", str(self.port),
                    "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, str(self.root)]
        return [str(ROOT / ".test-venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def start(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.port = free_port()
        env = dict(os.environ, RUST_LOG="error")
        logfile = open(self.log, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=logfile,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        logfile.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.kind} exited at start; see {self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise BenchError(f"{self.kind} did not listen on port {self.port}")
        run_checked(["rclone", "mkdir", f"{self.name}:{BUCKET}"], env=self.rclone_env(self))

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def run_checked(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, check=False, **kw)
    if out.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} exited {out.returncode}: "
                         f"{out.stderr.decode(errors='replace').strip()[-2000:]}")
    return out.stdout.decode()


# ------------------------------------------------------------------ measuring ---
def busy_cpu_seconds():
    """CPU time spent by the whole machine (all cores) since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def measure(cmd, cwd, env, server=None, label=""):
    """Run one command; return its wall time, CPU, peak RSS and context.
    `server`: the S3 server it talks to, or a tuple of them."""
    servers = server if isinstance(server, tuple) else (server,) if server else ()
    out_path = Path(cwd) / "output.txt"
    load = os.getloadavg()[0]
    busy0 = busy_cpu_seconds()
    srv0 = sum(s.cpu_seconds() for s in servers)
    usage_path = Path(cwd) / "usage.txt"
    # GNU time, not our own wait4(): a child forked from this (large) Python
    # process would count the fork's memory in its peak RSS.
    timed = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(usage_path), *cmd]
    with open(out_path, "wb") as out:
        start = time.monotonic()
        proc = subprocess.run(timed, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
        wall = time.monotonic() - start
    fields = usage_path.read_text().split()[-3:]
    peak_kib, user, sys_ = int(fields[0]), float(fields[1]), float(fields[2])
    cpu = user + sys_
    srv = sum(s.cpu_seconds() for s in servers) - srv0
    result = {
        "wall_s": wall,
        "user_s": user,
        "sys_s": sys_,
        "peak_rss_kib": peak_kib,
        "server_cpu_s": srv,
        "other_cpu_s": max(0.0, busy_cpu_seconds() - busy0 - cpu - srv),
        "load1_before": load,
        "load1_after": os.getloadavg()[0],
        "exit": proc.returncode,
    }
    if servers:
        result["server_peak_rss_kib"] = max(s.peak_rss_kib() for s in servers)
    if proc.returncode != 0:
        tail = out_path.read_text(errors="replace")[-3000:]
        raise BenchError(f"{label}: {' '.join(map(str, cmd))} exited {proc.returncode}:\n{tail}")
    return result


# ------------------------------------------------------------------ data ---
def media_rows(spec, seed):
    """The media of a data set: dicts with kind, origin, ids, sizes of files."""
    rng = random.Random(seed)
    media = []
    for count, kind, low, high, thumbs in spec:
        for _ in range(count):
            origin = "" if rng.random() < 0.75 else rng.choice(ORIGINS)
            fid = fs_id(rng)
            files = [("", log_uniform(rng, low, high))]
            if thumbs:
                files += [(name, log_uniform(rng, lo, hi)) for name, lo, hi in IMAGE_THUMBS]
            media.append({"origin": origin, "media_id": fid if not origin else fs_id(rng),
                          "filesystem_id": fid, "kind": kind, "files": files})
    return media


def media_paths(m):
    a, b, rest = m["filesystem_id"][:2], m["filesystem_id"][2:4], m["filesystem_id"][4:]
    if m["origin"]:
        return (f"remote_content/{m['origin']}/{a}/{b}/{rest}", f"remote_thumbnail/{m['origin']}/{a}/{b}/{rest}")
    return f"local_content/{a}/{b}/{rest}", f"local_thumbnails/{a}/{b}/{rest}"


def write_store(media, store, seed):
    """Write the files: incompressible bytes, each file different, last
    written 400 days ago (as old as their rows; past any settle time)."""
    written = time.time() - 400 * 86400
    block = random.Random(seed).randbytes(16 * 1024 * 1024)
    view = memoryview(block)
    rng = random.Random(seed + 1)
    files = total = 0
    for m in media:
        original, thumb_dir = media_paths(m)
        for name, size in m["files"]:
            path = store / (f"{thumb_dir}/{name}" if name else original)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                header = f"{path.relative_to(store)}\n".encode()[:size]
                f.write(header)
                left = size - len(header)
                while left > 0:
                    off = rng.randrange(0, len(block) // 2)
                    n = min(left, len(block) - off)
                    f.write(view[off:off + n])
                    left -= n
            os.utime(path, (written, written))
            files += 1
            total += size
    return files, total


def load_homeserver_rows(pg, db, media):
    now = int(time.time() * 1000)
    old = now - 400 * DAY_MS
    local, remote, local_thumbs, remote_thumbs = [], [], [], []
    for i, m in enumerate(media):
        size = m["files"][0][1]
        mtype = {"image": "image/jpeg", "video": "video/mp4", "big": "video/mp4"}.get(m["kind"], "application/pdf")
        ts = old + i
        if m["origin"]:
            remote.append(f"{m['origin']}\t{m['media_id']}\t{mtype}\t{ts}\tupload\t{size}\t{m['filesystem_id']}\t{ts}\n")
        else:
            local.append(f"{m['media_id']}\t{mtype}\t{size}\t{ts}\tupload\t@user{i % 500}:bench.example\t{ts}\n")
        for name, tsize in m["files"][1:]:
            # "W-H-TOP-SUB-METHOD", as Synapse names the file after its row.
            w, h, top, sub, method = name.split("-")
            if m["origin"]:
                remote_thumbs.append(f"{m['origin']}\t{m['media_id']}\t{w}\t{h}\t{method}\t{top}/{sub}\t{tsize}"
                                     f"\t{m['filesystem_id']}\n")
            else:
                local_thumbs.append(f"{m['media_id']}\t{w}\t{h}\t{top}/{sub}\t{method}\t{tsize}\n")
    pg.psql(db, "COPY local_media_repository (media_id, media_type, media_length, created_ts, upload_name, "
                "user_id, last_access_ts) FROM STDIN", "".join(local).encode())
    pg.psql(db, "COPY remote_media_cache (media_origin, media_id, media_type, created_ts, upload_name, "
                "media_length, filesystem_id, last_access_ts) FROM STDIN", "".join(remote).encode())
    pg.psql(db, "COPY local_media_repository_thumbnails (media_id, thumbnail_width, thumbnail_height, "
                "thumbnail_type, thumbnail_method, thumbnail_length) FROM STDIN", "".join(local_thumbs).encode())
    pg.psql(db, "COPY remote_media_cache_thumbnails (media_origin, media_id, thumbnail_width, thumbnail_height, "
                "thumbnail_method, thumbnail_type, thumbnail_length, filesystem_id) FROM STDIN",
            "".join(remote_thumbs).encode())


def generate_rows(pg, db, n):
    """n media rows, a quarter of them remote, all last accessed 400 days ago."""
    now = int(time.time() * 1000)
    n_local = n * 3 // 4
    pg.psql(db, f"""
        INSERT INTO local_media_repository (media_id, media_type, media_length, created_ts, upload_name,
                                            user_id, last_access_ts)
        SELECT substr(md5('local' || i), 1, 24), 'image/jpeg', 100000 + i % 1000, {now} - {400 * DAY_MS} - i,
               'IMG_' || i || '.jpg', '@user' || (i % 5000) || ':bench.example', {now} - {400 * DAY_MS} + i
        FROM generate_series(1, {n_local}) AS i""")
    origins = "ARRAY[" + ",".join(f"'{o}'" for o in ORIGINS) + "]"
    pg.psql(db, f"""
        INSERT INTO remote_media_cache (media_origin, media_id, media_type, created_ts, upload_name,
                                        media_length, filesystem_id, last_access_ts)
        SELECT ({origins})[1 + i % {len(ORIGINS)}], substr(md5('rid' || i), 1, 24), 'image/png',
               {now} - {400 * DAY_MS} - i, 'image.png', 50000 + i % 1000, substr(md5('rfs' || i), 1, 24),
               {now} - {400 * DAY_MS} + i
        FROM generate_series(1, {n - n_local}) AS i""")
    pg.psql(db, "ANALYZE")


def cache_count(path, where="1"):
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM media WHERE {where}").fetchone()[0]


def count_tree(path):
    files = total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return files, total


# ------------------------------------------------------------------ the bench ---
class Bench:
    def __init__(self, args):
        self.args = args
        self.profile = PROFILES["smoke" if args.smoke else "full"]
        self.runs = args.runs or self.profile["runs"]
        self.pg = Postgres()
        self.mo = str(ROOT / "target" / "release" / "media-offload")
        self.py = str(ROOT / ".test-venv" / "bin" / "s3_media_upload")
        self.server = Server(args.server, self.rclone_env)
        self.results = []
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        self.base_env.update({
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "PGPASSWORD": os.environ.get("MO_TEST_PG_SUPERPASS", ""),
        })

    def rclone_env(self, *servers):
        """rclone's environment with a remote named after each server."""
        conf = WORK / "rclone.conf"
        conf.touch()
        env = dict(self.base_env, RCLONE_CONFIG=str(conf))
        for server in servers:
            p = f"RCLONE_CONFIG_{server.name.upper()}_"
            env.update({p + "TYPE": "s3", p + "PROVIDER": "Other", p + "ENV_AUTH": "false",
                        p + "ACCESS_KEY_ID": ACCESS_KEY, p + "SECRET_ACCESS_KEY": SECRET_KEY,
                        p + "REGION": "us-east-1", p + "ENDPOINT": server.url, p + "FORCE_PATH_STYLE": "true"})
        return env

    def record(self, step, tool, size, run, result, **extra):
        entry = {"step": step, "tool": tool, "size": size, "run": run, **result, **extra}
        self.results.append(entry)
        log(f"{step} {size} {tool} run {run}: {result['wall_s']:.2f} s, "
            f"peak RSS {result['peak_rss_kib'] / 1024:.1f} MiB, load {result['load1_before']:.2f}")
        self.out.write_text(json.dumps({"system": self.system, "results": self.results}, indent=1))

    # -- upload ------------------------------------------------------------
    def prepare_upload_set(self, name):
        spec = self.profile[name]
        data = WORK / "data" / f"{'smoke-' if self.args.smoke else ''}{name}"
        media = media_rows(spec, seed=len(name))
        stamp = data / "manifest.json"
        # "written": the files carry old modification times (a store made
        # before they did would have every file skipped as just written).
        want = json.dumps({"spec": spec, "written": "400 days ago"})
        if not (stamp.exists() and json.loads(stamp.read_text()).get("spec") == want):
            log(f"generating the {name} media store in {data}")
            shutil.rmtree(data, ignore_errors=True)
            (data / "media_store").mkdir(parents=True)
            files, total = write_store(media, data / "media_store", seed=len(name))
            stamp.write_text(json.dumps({"spec": want, "files": files, "bytes": total, "media": len(media)}))
        manifest = json.loads(stamp.read_text())
        db = f"bench_{name}"
        self.pg.fresh_database(db)
        load_homeserver_rows(self.pg, db, media)
        # cache.db as `update-db` leaves it; every run starts from a copy.
        cache = data / "cache.db"
        cache.unlink(missing_ok=True)
        (data / "database.yaml").write_text(self.pg.database_yaml(db))
        run_checked([self.mo, "--no-progress", "update-db", "30d"], cwd=data, env=self.base_env)
        if cache_count(cache) != len(media):
            raise BenchError(f"{name}: cache.db has {cache_count(cache)} rows, expected {len(media)}")
        log(f"{name}: {manifest['media']} media, {manifest['files']} files, {manifest['bytes'] / 1e9:.2f} GB")
        return data, manifest

    def upload_command(self, tool, store):
        if tool == "media-offload":
            return [self.mo, "--no-progress", "upload", str(store), BUCKET, "--endpoint-url", self.server.url, "--delete"]
        if tool == "s3_media_upload":
            return [self.py, "--no-progress", "upload", str(store), BUCKET, "--endpoint-url", self.server.url, "--delete"]
        return ["rclone", "copy", "--transfers", "32", "-q", str(store), f"bench:{BUCKET}"]

    def bench_upload(self, name):
        data, manifest = self.prepare_upload_set(name)
        step = f"upload-{name}"
        for run in range(1, self.runs + 1):
            for tool in self.args.tools:
                if tool == "s3_media_upload" and run > self.args.python_upload_runs:
                    continue
                work = WORK / "runs" / step / f"{tool}-{run}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                store = work / "media_store"
                # Hard links: a fresh store in a second, and --delete unlinks
                # only these names, never the generated data.
                run_checked(["cp", "-al", str(data / "media_store"), str(store)])
                shutil.copy(data / "cache.db", work / "cache.db")
                self.server.start()
                os.sync()
                time.sleep(1)
                env = self.rclone_env(self.server) if tool == "rclone" else self.base_env
                result = measure(self.upload_command(tool, store), work, env, self.server, f"{step} {tool}")
                self.verify_upload(tool, work, store, manifest)
                result["files_per_s"] = manifest["files"] / result["wall_s"]
                result["mb_per_s"] = manifest["bytes"] / 1e6 / result["wall_s"]
                self.record(step, tool, manifest["files"], run, result, bytes=manifest["bytes"])
                self.server.stop()
                shutil.rmtree(work, ignore_errors=True)

    def verify_bucket(self, server, tool, manifest):
        """The bucket on `server` holds as many objects and bytes as the media store."""
        if server.kind == "s3s-fs":
            # s3s-fs answers a flat listing (empty delimiter, what rclone's
            # recursive listings ask for) with no objects; its objects are
            # plain files under the bucket's folder.
            count, total = count_tree(server.root / BUCKET)
        else:
            listing = json.loads(run_checked(["rclone", "lsjson", "-R", "--files-only", "--no-mimetype",
                                              "--no-modtime", f"{server.name}:{BUCKET}"], env=self.rclone_env(server)))
            count, total = len(listing), sum(o["Size"] for o in listing)
        if (count, total) != (manifest["files"], manifest["bytes"]):
            raise BenchError(f"{tool}: the bucket on {server.url} holds {count} objects, {total} bytes; "
                             f"expected {manifest['files']}, {manifest['bytes']}")

    def verify_upload(self, tool, work, store, manifest):
        self.verify_bucket(self.server, tool, manifest)
        if tool != "rclone":
            left = count_tree(store)[0]
            if left:
                raise BenchError(f"{tool}: {left} files left in the media store after upload --delete")
            if cache_count(work / "cache.db", "NOT known_deleted"):
                raise BenchError(f"{tool}: cache.db still has media not marked deleted")

    # -- copy --------------------------------------------------------------
    def bench_copy(self):
        """The mix's objects from one S3 server to a second one: two servers
        of the same kind, each its own process, port and folder. The source
        is filled once (not timed) and only read; the destination starts
        empty for every run."""
        data, manifest = self.prepare_upload_set("mix")
        db = "bench_mix"  # made by prepare_upload_set
        src, dst = Server(self.args.server, self.rclone_env, name="source"), self.server
        step = "copy"
        try:
            src.start()
            log(f"{step}: filling the source server (not timed)")
            run_checked(["rclone", "copy", "--transfers", "32", "-q", str(data / "media_store"), f"source:{BUCKET}"],
                        env=self.rclone_env(src))
            self.verify_bucket(src, "the source", manifest)
            for run in range(1, self.runs + 1):
                for tool in [t for t in COPY_TOOLS if t in self.args.tools]:
                    work = WORK / "runs" / step / f"{tool}-{run}"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir(parents=True)
                    # What the copy reads the database names from (its state
                    # file goes beside ./cache.db, here).
                    (work / "homeserver.yaml").write_text(self.homeserver_yaml(db, data / "media_store"))
                    dst.start()
                    os.sync()
                    time.sleep(1)
                    if tool == "media-offload":
                        cmd = [self.mo, "--no-progress", "copy", "--from", f"s3:{BUCKET}", "--from-endpoint-url",
                               src.url, "--to", f"s3:{BUCKET}", "--to-endpoint-url", dst.url]
                        env = self.base_env
                    else:
                        cmd = ["rclone", "copy", "--transfers", "32", "-q", f"source:{BUCKET}", f"bench:{BUCKET}"]
                        env = self.rclone_env(src, dst)
                    result = measure(cmd, work, env, (src, dst), f"{step} {tool}")
                    self.verify_bucket(dst, tool, manifest)
                    result["files_per_s"] = manifest["files"] / result["wall_s"]
                    result["mb_per_s"] = manifest["bytes"] / 1e6 / result["wall_s"]
                    self.record(step, tool, manifest["files"], run, result, bytes=manifest["bytes"])
                    dst.stop()
                    shutil.rmtree(work, ignore_errors=True)
        finally:
            src.stop()

    def homeserver_yaml(self, db, media_store):
        """A homeserver.yaml for the database `db` (unix socket, superuser)."""
        return (f"server_name: bench.example\nmedia_store_path: {json.dumps(str(media_store))}\n"
                f"database:\n  name: psycopg2\n  args:\n    host: {json.dumps(self.pg.socket)}\n"
                f"    port: {self.pg.port}\n    user: {json.dumps(self.pg.user)}\n    dbname: {db}\n")

    # -- update-db and check-deleted --------------------------------------
    def rows_data(self, n):
        data = WORK / "data" / f"rows-{n}"
        data.mkdir(parents=True, exist_ok=True)
        return data

    def db_command(self, tool, *args):
        return [self.mo if tool == "media-offload" else self.py, "--no-progress", *args]

    def bench_update_db(self):
        for n in self.args.rows:
            data = self.rows_data(n)
            db = f"bench_rows_{n}"
            log(f"generating {n} media rows in PostgreSQL")
            self.pg.fresh_database(db)
            generate_rows(self.pg, db, n)
            for run in range(1, self.runs + 1):
                for tool in DB_TOOLS:
                    work = WORK / "runs" / "update-db" / f"{n}-{tool}-{run}"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir(parents=True)
                    (work / "database.yaml").write_text(self.pg.database_yaml(db))
                    os.sync()
                    result = measure(self.db_command(tool, "update-db", "30d"), work, self.base_env,
                                     label=f"update-db {n} {tool}")
                    got = cache_count(work / "cache.db")
                    if got != n:
                        raise BenchError(f"update-db {tool}: cache.db has {got} rows, expected {n}")
                    result["rows_per_s"] = n / result["wall_s"]
                    self.record("update-db", tool, n, run, result)
                    # The daily case: every row is already in cache.db.
                    again = measure(self.db_command(tool, "update-db", "30d"), work, self.base_env,
                                    label=f"update-db again {n} {tool}")
                    if cache_count(work / "cache.db") != n:
                        raise BenchError(f"update-db again {tool}: cache.db no longer has {n} rows")
                    again["rows_per_s"] = n / again["wall_s"]
                    self.record("update-db-again", tool, n, run, again)
                    if tool == "media-offload" and run == 1:
                        shutil.copy(work / "cache.db", data / "cache.db")
                    shutil.rmtree(work, ignore_errors=True)

    def check_deleted_store(self, n, data):
        """A media store where every 50th media still has its original."""
        store = data / "media_store"
        stamp = data / "store-stamp"
        if stamp.exists() and stamp.read_text() == str(n):
            return store, int((data / "present").read_text())
        shutil.rmtree(store, ignore_errors=True)
        for top in ("local_content", "local_thumbnails", "remote_content", "remote_thumbnail"):
            (store / top).mkdir(parents=True)
        present = 0
        with sqlite3.connect(data / "cache.db") as conn:
            for i, (origin, fid) in enumerate(conn.execute("SELECT origin, filesystem_id FROM media ORDER BY rowid")):
                if i % 50:
                    continue
                original = media_paths({"origin": origin, "filesystem_id": fid})[0]
                (store / original).parent.mkdir(parents=True, exist_ok=True)
                (store / original).write_bytes(b"x")
                present += 1
        (data / "present").write_text(str(present))
        stamp.write_text(str(n))
        return store, present

    def bench_check_deleted(self):
        for n in self.args.rows:
            data = self.rows_data(n)
            if not (data / "cache.db").exists() or cache_count(data / "cache.db") != n:
                raise BenchError(f"check-deleted {n}: run the update-db step first (it makes cache.db)")
            store, present = self.check_deleted_store(n, data)
            for run in range(1, self.runs + 1):
                for tool in DB_TOOLS:
                    work = WORK / "runs" / "check-deleted" / f"{n}-{tool}-{run}"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir(parents=True)
                    shutil.copy(data / "cache.db", work / "cache.db")
                    os.sync()
                    result = measure(self.db_command(tool, "check-deleted", str(store)), work, self.base_env,
                                     label=f"check-deleted {n} {tool}")
                    deleted = cache_count(work / "cache.db", "known_deleted")
                    if deleted != n - present:
                        raise BenchError(f"check-deleted {tool}: {deleted} rows marked deleted, expected {n - present}")
                    result["rows_per_s"] = n / result["wall_s"]
                    self.record("check-deleted", tool, n, run, result)
                    shutil.rmtree(work, ignore_errors=True)

    def daily_data(self, n, data):
        """The daily case: a cache.db where all rows but the last 1% (the
        day's, which update-db has just added at the end of the table) are
        known deleted; a store with the files of half of the day's rows (the
        others are gone already) and of every 1000th deleted row (pulled
        back by Synapse, scattered through the history). Returns (store,
        cache.db, rows left open, rows pulled back)."""
        daily = data / "daily"
        stamp = daily / "stamp"
        cache = daily / "cache.db"
        layout = "day-at-end"
        if stamp.exists() and stamp.read_text().split()[0] == str(n) and stamp.read_text().split()[-1] == layout:
            _, open_rows, back, _ = stamp.read_text().split()
            return daily / "media_store", cache, int(open_rows), int(back)
        shutil.rmtree(daily, ignore_errors=True)
        store = daily / "media_store"
        for top in ("local_content", "local_thumbnails", "remote_content", "remote_thumbnail"):
            (store / top).mkdir(parents=True)
        shutil.copy(data / "cache.db", cache)
        open_rows = back = 0
        with sqlite3.connect(cache) as conn:
            first_of_day = conn.execute("SELECT MAX(rowid) FROM media").fetchone()[0] - n // 100
            conn.execute("UPDATE media SET known_deleted = 1 WHERE rowid <= ?", (first_of_day,))
            rows = list(conn.execute("SELECT rowid, origin, filesystem_id FROM media ORDER BY rowid"))
        for rowid, origin, fid in rows:
            if rowid > first_of_day:
                if rowid % 2:
                    continue        # the day's, gone already: marked deleted
                open_rows += 1      # the day's, not offloaded yet: stays open
            elif rowid % 1000 == 7:
                back += 1           # known deleted, back on disk
            else:
                continue
            original = store / media_paths({"origin": origin, "filesystem_id": fid})[0]
            original.parent.mkdir(parents=True, exist_ok=True)
            original.write_bytes(b"x")
        stamp.write_text(f"{n} {open_rows} {back} {layout}")
        return store, cache, open_rows, back

    def bench_check_deleted_daily(self):
        for n in self.args.rows:
            data = self.rows_data(n)
            if not (data / "cache.db").exists() or cache_count(data / "cache.db") != n:
                raise BenchError(f"check-deleted-daily {n}: run the update-db step first (it makes cache.db)")
            store, cache, open_rows, back = self.daily_data(n, data)
            for run in range(1, self.runs + 1):
                for tool in DB_TOOLS:
                    work = WORK / "runs" / "check-deleted-daily" / f"{n}-{tool}-{run}"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir(parents=True)
                    shutil.copy(cache, work / "cache.db")
                    os.sync()
                    result = measure(self.db_command(tool, "check-deleted", str(store)), work, self.base_env,
                                     label=f"check-deleted-daily {n} {tool}")
                    # The Python tool never reopens a media whose files came back.
                    want = n - open_rows - (back if tool == "media-offload" else 0)
                    deleted = cache_count(work / "cache.db", "known_deleted")
                    if deleted != want:
                        raise BenchError(f"check-deleted-daily {tool}: {deleted} rows marked deleted, expected {want}")
                    result["rows_per_s"] = n / result["wall_s"]
                    self.record("check-deleted-daily", tool, n, run, result)
                    shutil.rmtree(work, ignore_errors=True)

    # -- purge -------------------------------------------------------------
    def purge_data(self, n):
        """A homeserver database (a template to copy for each run) with n
        remote media last accessed 400 days ago, each with one thumbnail
        row, and one media viewed today (the database is live, and it must
        stay); cache.db as update-db leaves it; and the media store's files,
        which each run hard-links into its media store and into the S3
        server's bucket folder (s3s-fs serves plain files as objects).
        Returns (data dir, template database, files per copy)."""
        data = WORK / "data" / f"purge-{n}"
        template = f"bench_purge_tpl_{n}"
        now = int(time.time() * 1000)
        old = now - 400 * DAY_MS
        self.pg.fresh_database(template)
        origins = "ARRAY[" + ",".join(f"'{o}'" for o in ORIGINS) + "]"
        self.pg.psql(template, f"""
            INSERT INTO remote_media_cache (media_origin, media_id, media_type, created_ts, upload_name,
                                            media_length, filesystem_id, last_access_ts)
            SELECT ({origins})[1 + i % {len(ORIGINS)}], substr(md5('pid' || i), 1, 24), 'image/jpeg',
                   {old} - i, 'image.jpg', 100, substr(md5('pfs' || i), 1, 24), {old} + i
            FROM generate_series(1, {n}) AS i;
            INSERT INTO remote_media_cache (media_origin, media_id, media_type, created_ts, upload_name,
                                            media_length, filesystem_id, last_access_ts)
            VALUES ('{ORIGINS[0]}', 'viewedtodayviewedtodayvi', 'image/jpeg', {now}, 'new.jpg', 100,
                    'viewedtodayviewedtodayfs', {now});
            INSERT INTO remote_media_cache_thumbnails (media_origin, media_id, thumbnail_width, thumbnail_height,
                                                       thumbnail_method, thumbnail_type, thumbnail_length,
                                                       filesystem_id)
            SELECT media_origin, media_id, {PURGE_THUMB[1]}, {PURGE_THUMB[2]}, '{PURGE_THUMB[4]}',
                   '{PURGE_THUMB[3]}', 50, filesystem_id
            FROM remote_media_cache;
            ANALYZE""")
        (data / "database.yaml").parent.mkdir(parents=True, exist_ok=True)
        (data / "database.yaml").write_text(self.pg.database_yaml(template))
        stamp = data / "stamp"
        if not (stamp.exists() and stamp.read_text() == str(n)):
            log(f"generating the purge data set of {n:,} media in {data}")
            shutil.rmtree(data / "media_store", ignore_errors=True)
            written = time.time() - 400 * 86400
            rows = self.pg.psql(template, "SELECT media_origin, filesystem_id FROM remote_media_cache")
            for line in rows.splitlines():
                origin, fid = line.split("|")
                original, thumb_dir = media_paths({"origin": origin, "filesystem_id": fid})
                for rel, body in ((original, b"o" * 100), (f"{thumb_dir}/{PURGE_THUMB[0]}", b"t" * 50)):
                    path = data / "media_store" / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(body)
                    os.utime(path, (written, written))
            stamp.write_text(str(n))
        cache = data / "cache.db"
        cache.unlink(missing_ok=True)
        run_checked([self.mo, "--no-progress", "update-db", "0s"], cwd=data, env=self.base_env)
        if cache_count(cache) != n + 1:
            raise BenchError(f"purge {n}: cache.db has {cache_count(cache)} rows, expected {n + 1}")
        return data, template, 2 * (n + 1)

    def bench_purge(self):
        if self.server.kind != "s3s-fs":
            raise BenchError("the purge step needs s3s-fs: its objects are put in place as files in its folder")
        for n in self.args.rows:
            data, template, files = self.purge_data(n)
            db = "bench_purge_run"
            for run in range(1, self.runs + 1):
                work = WORK / "runs" / "purge" / f"{n}-{run}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                self.pg.psql("postgres", f"DROP DATABASE IF EXISTS {db}")
                self.pg.psql("postgres", f"CREATE DATABASE {db} TEMPLATE {template}")
                (work / "database.yaml").write_text(self.pg.database_yaml(db))
                shutil.copy(data / "cache.db", work / "cache.db")
                store = work / "media_store"
                run_checked(["cp", "-al", str(data / "media_store"), str(store)])
                self.server.start()
                bucket = self.server.root / BUCKET
                run_checked(["cp", "-al", f"{data / 'media_store'}/.", str(bucket)])
                if count_tree(bucket)[0] != files:
                    raise BenchError(f"purge {n}: the bucket folder has {count_tree(bucket)[0]} files, expected {files}")
                os.sync()
                time.sleep(1)
                cmd = [self.mo, "--no-progress", "--json", "purge", "--remote-older-than", "1d",
                       "--media-store-path", str(store), "--bucket", BUCKET, "--endpoint-url", self.server.url]
                result = measure(cmd, work, self.base_env, self.server, f"purge {n}")
                self.verify_purge(n, work, db, store, bucket)
                result["rows_per_s"] = n / result["wall_s"]
                self.record("purge", "media-offload", n, run, result)
                self.server.stop()
                shutil.rmtree(work, ignore_errors=True)
            self.pg.psql("postgres", f"DROP DATABASE IF EXISTS {db}")

    def verify_purge(self, n, work, db, store, bucket):
        lines = (work / "output.txt").read_text().splitlines()
        summary = json.loads(next((line for line in reversed(lines) if line.startswith("{")), "{}"))
        remote = summary.get("remote", {})
        want = {"media": n, "files": 2 * n, "object_keys": 2 * n, "failed": 0, "refused": 0}
        got = {k: remote.get(k) for k in want}
        if got != want:
            raise BenchError(f"purge {n}: the summary says {got}, expected {want}")
        left = self.pg.psql(db, "SELECT (SELECT COUNT(*) FROM remote_media_cache) || ' ' || "
                                "(SELECT COUNT(*) FROM remote_media_cache_thumbnails)").split()
        if left != ["1", "1"]:
            raise BenchError(f"purge {n}: {left} media and thumbnail rows left, expected the one viewed today")
        for where, folder in (("media store", store), ("bucket", bucket)):
            if count_tree(folder)[0] != 2:
                raise BenchError(f"purge {n}: the {where} has {count_tree(folder)[0]} files left, expected 2")
        if cache_count(work / "cache.db") != 1:
            raise BenchError(f"purge {n}: cache.db has {cache_count(work / 'cache.db')} rows left, expected 1")

    # -- report ------------------------------------------------------------
    def describe_system(self):
        def cmd(*c):
            try:
                return subprocess.run(c, capture_output=True, text=True, check=False).stdout.strip()
            except OSError:
                return ""

        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        pip_show = cmd(str(ROOT / ".test-venv" / "bin" / "pip"), "show", "synapse-s3-storage-provider", "boto3", "moto")
        versions = dict(re.findall(r"Name: (\S+)\nVersion: (\S+)", pip_show))
        df = cmd("df", "-h", "--output=source,fstype,size,avail", str(WORK)).splitlines()
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem / 1024 / 1024, 1),
            "disk": df[-1] if df else "", "kernel": platform.release(),
            "os": cmd("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
            "media-offload": cmd(self.mo, "--version"),
            "s3_media_upload": "synapse-s3-storage-provider " + versions.get("synapse-s3-storage-provider", "?"),
            "boto3": versions.get("boto3", "?"), "moto": versions.get("moto", "?"),
            "rclone": cmd("rclone", "version").splitlines()[0] if cmd("rclone", "version") else "",
            "s3s-fs": cmd(os.environ.get("BENCH_S3S_FS", "s3s-fs"), "--version"),
            "postgresql": self.pg.version(),
            "python": cmd(str(ROOT / ".test-venv" / "bin" / "python"), "--version"),
            "server": self.args.server, "runs": self.runs, "profile": "smoke" if self.args.smoke else "full",
        }

    def run(self):
        WORK.mkdir(parents=True, exist_ok=True)
        self.out = WORK / time.strftime("results-%Y%m%d-%H%M%S.json", time.gmtime())
        self.system = self.describe_system()
        log(f"system: {json.dumps(self.system)}")
        try:
            for step in self.args.steps:
                log(f"step {step}")
                if step == "upload-mix":
                    self.bench_upload("mix")
                elif step == "upload-small":
                    self.bench_upload("small")
                elif step == "update-db":
                    self.bench_update_db()
                elif step == "check-deleted":
                    self.bench_check_deleted()
                elif step == "check-deleted-daily":
                    self.bench_check_deleted_daily()
                elif step == "purge":
                    self.bench_purge()
                elif step == "copy":
                    self.bench_copy()
        finally:
            self.server.stop()
        report = markdown(self.system, self.results)
        self.out.with_suffix(".md").write_text(report)
        log(f"results in {self.out} and {self.out.with_suffix('.md')}")
        print(report)


def markdown(system, results):
    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    groups = {}
    for r in results:
        groups.setdefault((r["step"], r["size"], r["tool"]), []).append(r)
    lines = ["System: " + ", ".join(f"{k} {v}" for k, v in system.items()), ""] if system else []
    lines += ["| step | size | tool | runs | wall s (median) | files/s or rows/s | MB/s | peak RSS MiB (max) "
              "| tool CPU s | S3 server CPU s | other CPU s | load1 before |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (step, size, tool), rows in groups.items():
        rate = med(rows, "files_per_s") if "files_per_s" in rows[0] else med(rows, "rows_per_s")
        mbs = f"{med(rows, 'mb_per_s'):.1f}" if "mb_per_s" in rows[0] else ""
        lines.append(
            f"| {step} | {size:,} | {tool} | {len(rows)} | {med(rows, 'wall_s'):.2f} | {rate:,.0f} | {mbs} "
            f"| {max(r['peak_rss_kib'] for r in rows) / 1024:.1f} "
            f"| {statistics.median(r['user_s'] + r['sys_s'] for r in rows):.2f} "
            f"| {med(rows, 'server_cpu_s'):.2f} | {med(rows, 'other_cpu_s'):.2f} "
            f"| {', '.join('%.2f' % r['load1_before'] for r in rows)} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run: checks that every step works")
    parser.add_argument("--runs", type=int, help="runs per tool and step (default 3, smoke 1)")
    parser.add_argument("--server", choices=["s3s-fs", "moto"], default="s3s-fs", help="S3 server (default s3s-fs)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {','.join(STEPS)}")
    parser.add_argument("--tools", default=",".join(UPLOAD_TOOLS), help="upload tools to run")
    parser.add_argument("--rows", help="row counts for update-db, check-deleted and purge, comma-separated")
    parser.add_argument("--python-upload-runs", type=int, default=99,
                        help="at most this many runs of s3_media_upload in the upload steps (its runs are long)")
    parser.add_argument("--report", nargs="+", metavar="RESULTS_JSON",
                        help="only print one table of the results in these files (no services needed)")
    args = parser.parse_args()
    if args.report:
        results = []
        for path in args.report:
            results += json.loads(Path(path).read_text())["results"]
        print(markdown(None, results))
        return
    args.steps = [s for s in args.steps.split(",") if s]
    args.tools = [t for t in args.tools.split(",") if t]
    for step in args.steps:
        if step not in STEPS:
            parser.error(f"unknown step {step!r}")
    for tool in args.tools:
        if tool not in UPLOAD_TOOLS:
            parser.error(f"unknown tool {tool!r}")
    profile = PROFILES["smoke" if args.smoke else "full"]
    args.rows = [int(x) for x in args.rows.split(",")] if args.rows else profile["rows"]
    try:
        Bench(args).run()
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
