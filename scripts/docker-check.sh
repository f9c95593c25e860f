#!/usr/bin/env bash
# Checks the Dockerfile without a Docker engine, by doing what `docker build` and `docker run` would do:
#   1. hadolint (from .venv, scripts/requirements.txt) finds nothing;
#   2. every COPY source exists in the build context and is not dropped by .dockerignore; the context is laid
#      out in a temporary root as the COPYs place it (files filtered by .dockerignore, mtimes kept);
#   3. the build stage's RUN steps run as written (shell, WORKDIR, absolute paths moved under the temporary
#      root): the venv + pip install of onnxruntime==1.31.1 + the cp of its library, and the cargo build on
#      exactly the copied context. apt-get steps are not run (their packages are checked in step 4);
#   4. the runtime stage is laid out (COPY --from, COPY models), and the libraries its binaries load, the
#      HEALTHCHECK's command and Kubernetes' preStop command come from the runtime stage's apt-get line or
#      from the slim base image (Essential packages and apt's dependencies, read from this Debian host);
#   5. the image's ENTRYPOINT runs from that layout with its ENV, as its USER, on free ports: the HEALTHCHECK
#      command succeeds, the server loaded the library from the layout, every model is READY, and SIGTERM
#      (STOPSIGNAL) ends it with status 0.
#
# The cargo step builds in the debug profile by default (the Dockerfile's command minus --release, into the
# repository's target/ through the `target` cache mount): `make test` has just built it, so cargo only checks
# that the copied context is complete (a missing file forces a rebuild, which then fails). A release build
# with a stale target/ takes ~10 minutes on 2 cores; DOCKER_CHECK_RELEASE=1 runs it as written.
#
# Usage: scripts/docker-check.sh            (DOCKER_CHECK_KEEP=1 keeps the temporary root)
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[[ -x $python ]] || python=python3
exec "$python" - "$@" <<'PY'
import json, os, re, shlex, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

REPO = Path.cwd()
RELEASE = os.environ.get("DOCKER_CHECK_RELEASE") == "1"
failures = []
t_start = time.monotonic()


def step(name):
    print(f"docker-check: {name}", flush=True)


def fail(msg):
    failures.append(msg)
    print(f"docker-check: FAIL: {msg}", flush=True)


def done(t0, what):
    print(f"docker-check:   {what} ({time.monotonic() - t0:.1f}s)", flush=True)


# ---------------------------------------------------------------- Dockerfile
def instructions(text):
    """(INSTRUCTION, rest) per instruction: continuations joined, comments and blank lines dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):  # comment inside a continued instruction
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def flags(rest):
    """Leading --flag=value options of an instruction, and what follows them."""
    opts = []
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        opts.append(flag)
        rest = rest.lstrip()
    return opts, rest


def exec_form(rest):
    rest = rest.strip()
    return json.loads(rest) if rest.startswith("[") else None


stages, cur = [], None
for word, rest in instructions((REPO / "Dockerfile").read_text()):
    if word == "FROM":
        m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
        cur = {"base": m.group(1), "name": m.group(2), "steps": [], "workdir": "/", "env": {},
               "shell": ["/bin/sh", "-c"], "user": None, "expose": [], "healthcheck": None,
               "entrypoint": None, "cmd": None, "stopsignal": None}
        stages.append(cur)
    elif word in ("ARG", "LABEL", "VOLUME"):
        pass
    elif word == "ADD":
        fail("ADD is not checked by this script: use COPY")
    elif word == "WORKDIR":
        cur["workdir"] = os.path.join(cur["workdir"], rest)
        cur["steps"].append(("WORKDIR", cur["workdir"]))
    elif word == "SHELL":
        cur["shell"] = exec_form(rest)
    elif word == "ENV":
        for tok in shlex.split(rest):
            k, _, v = tok.partition("=")
            cur["env"][k] = v
    elif word in ("RUN", "COPY"):
        opts, body = flags(rest)
        cur["steps"].append((word, opts, body, cur["workdir"], list(cur["shell"])))
    elif word == "USER":
        cur["user"] = rest
    elif word == "EXPOSE":
        cur["expose"] += [int(p.split("/")[0]) for p in rest.split()]
    elif word == "HEALTHCHECK":
        opts, body = flags(rest)
        assert body.upper().startswith("CMD"), "HEALTHCHECK CMD"
        cur["healthcheck"] = exec_form(body[3:]) or ["/bin/sh", "-c", body[3:].strip()]
    elif word == "ENTRYPOINT":
        cur["entrypoint"] = exec_form(rest) or fail("ENTRYPOINT is not in exec form")
    elif word == "CMD":
        cur["cmd"] = exec_form(rest) or fail("CMD is not in exec form")
    elif word == "STOPSIGNAL":
        cur["stopsignal"] = rest
    else:
        fail(f"instruction {word} is not understood by this script")
runtime = stages[-1]
by_name = {s["name"]: s for s in stages if s["name"]}

# ---------------------------------------------------------------- 1. hadolint
step("1. hadolint Dockerfile")
hadolint = shutil.which("hadolint", path=str(REPO / ".venv/bin")) or shutil.which("hadolint")
if hadolint:
    r = subprocess.run([hadolint, "--no-color", "Dockerfile"], capture_output=True, text=True)
    if r.returncode or r.stdout.strip():
        fail("hadolint:\n" + r.stdout + r.stderr)
    else:
        print("docker-check:   clean", flush=True)
else:
    fail("hadolint not found (run scripts/setup.sh: it is in scripts/requirements.txt)")


# ---------------------------------------------------------------- .dockerignore
def pattern_regex(p):
    out, i = "", 0
    while i < len(p):
        c = p[i]
        if p.startswith("**/", i):
            out += "(?:.*/)?"; i += 3; continue
        if p.startswith("**", i):
            out += ".*"; i += 2; continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = p.index("]", i)
            out += "[" + p[i + 1:j].replace("!", "^", 1) + "]"; i = j
        elif c == "\\" and i + 1 < len(p):
            i += 1; out += re.escape(p[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


ignore = []
if (REPO / ".dockerignore").exists():
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        p = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        ignore.append((neg, pattern_regex(p)))


def excluded(rel):
    """Docker's rule (moby patternmatcher MatchesOrParentMatches): the last pattern that matches the path or
    one of its parent folders decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    out = False
    for neg, rx in ignore:
        if neg != out:
            continue
        if any(rx.match(p) for p in prefixes):
            out = not neg
    return out


def context_files(src):
    """Files a COPY of `src` sends (relative to the context), after .dockerignore."""
    base = REPO / src
    if base.is_file():
        return [src] if not excluded(src) else []
    found = []
    for dirpath, dirs, files in os.walk(base):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), REPO)
            if not excluded(rel):
                found.append(rel)
    return sorted(found)


# ---------------------------------------------------------------- 2. the context
tmp = Path(tempfile.mkdtemp(prefix="docker-check-"))
os.chmod(tmp, 0o755)
roots = {id(s): tmp / (s["name"] or f"stage{i}") for i, s in enumerate(stages)}
for r in roots.values():
    r.mkdir()


def under(stage, path):
    return roots[id(stage)] / path.lstrip("/")


def copy_tree(src, dst):
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def do_copy(stage, opts, body, workdir):
    args = exec_form(body) or shlex.split(body)
    srcs, dest = args[:-1], args[-1]
    dest_abs = os.path.join(workdir, dest)
    into_dir = dest.endswith("/") or len(srcs) > 1
    frm = [o.split("=", 1)[1] for o in opts if o.startswith("--from=")]
    for src in srcs:
        if frm:
            origin = under(by_name[frm[0]], src)
            if not origin.exists():
                fail(f"COPY --from={frm[0]} {src}: the build stage did not produce it")
                continue
            target = under(stage, dest_abs) / origin.name if into_dir and origin.is_file() else under(stage, dest_abs)
            copy_tree(origin, target)
            continue
        if not (REPO / src).exists():
            fail(f"COPY {src}: not in the build context")
            continue
        files = context_files(src)
        if not files:
            fail(f"COPY {src}: every file is excluded by .dockerignore")
            continue
        for rel in files:
            if (REPO / src).is_dir():
                target = under(stage, dest_abs) / os.path.relpath(rel, src)
            else:
                target = under(stage, dest_abs) / Path(src).name if into_dir else under(stage, dest_abs)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, target)
        if (REPO / src).is_dir():
            # Folders keep their mtimes too: cargo's rerun-if-changed=proto looks at them.
            for d in sorted({Path(rel).parent for rel in files}, key=lambda p: -len(p.parts)):
                for up in [d, *d.parents]:
                    if up == Path(src) or Path(src) in up.parents:
                        shutil.copystat(REPO / up, under(stage, dest_abs) / up.relative_to(src))
        print(f"docker-check:   COPY {src} -> {os.path.normpath(dest_abs)}: {len(files)} files", flush=True)


# Absolute paths a build stage's commands use that this script moves under the temporary root: its WORKDIR
# and the top folders later stages COPY --from.
moved = {}
for s in stages:
    for st in s["steps"]:
        if st[0] == "COPY":
            for o in st[1]:
                if o.startswith("--from="):
                    src = (exec_form(st[2]) or shlex.split(st[2]))[0]
                    moved.setdefault(o.split("=", 1)[1], set()).add("/" + src.lstrip("/").split("/")[0])


def move_paths(stage, text):
    tops = set(moved.get(stage["name"], set()))
    tops |= {"/" + s[1].lstrip("/").split("/")[0] for s in stage["steps"] if s[0] == "WORKDIR" and s[1] != "/"}
    for top in sorted(tops, key=len, reverse=True):
        text = re.sub(rf"(?<![\w./-]){re.escape(top)}(?=/|\s|$|[\"';&|])", str(roots[id(stage)]) + top, text)
    return text


# ---------------------------------------------------------------- 3. the build stages
failures_before_build = len(failures)
for s in stages[:-1]:
    step(f"2-3. stage '{s['name']}' ({s['base']}): COPY the context, RUN its steps")
    for st in s["steps"]:
        if st[0] == "WORKDIR":
            under(s, st[1]).mkdir(parents=True, exist_ok=True)
            continue
        word, opts, body, workdir, shell = st
        if word == "COPY":
            do_copy(s, opts, body, workdir)
            continue
        if "apt-get" in body:
            pkgs = " ".join(re.findall(r"install\s+(?:-\S+\s+)*([^&;|]+)", body)).split()
            print(f"docker-check:   (apt-get install {' '.join(pkgs)}: not run here)", flush=True)
            continue
        cwd = under(s, workdir)
        cwd.mkdir(parents=True, exist_ok=True)
        for o in opts:
            m = re.match(r"--mount=.*type=cache.*target=([^,\s]+)", o)
            if m and os.path.basename(m.group(1)) == "target" and os.path.dirname(m.group(1)) == workdir:
                link = under(s, m.group(1))
                if not link.exists():
                    link.symlink_to(REPO / "target")
                print(f"docker-check:   cache mount {m.group(1)} -> the repository's target/", flush=True)
        cmd = move_paths(s, body)
        if "cargo build" in cmd and not RELEASE:
            cmd = cmd.replace(" --release", "").replace("target/release/", "target/debug/")
            print("docker-check:   cargo in the debug profile (DOCKER_CHECK_RELEASE=1 for --release)", flush=True)
        env = {k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"}
        print(f"docker-check:   RUN {cmd}", flush=True)
        t0 = time.monotonic()
        r = subprocess.run(shell + [cmd], cwd=cwd, env=env)
        done(t0, f"exit {r.returncode}")
        if r.returncode:
            fail(f"RUN {body}: exit {r.returncode}")
            break

if len(failures) > failures_before_build:
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"docker-check: FAILED in the build stage ({time.monotonic() - t_start:.0f}s)", flush=True)
    sys.exit(1)

# ---------------------------------------------------------------- 4. the runtime stage's files and packages
step(f"4. runtime stage ({runtime['base']}): layout, libraries and commands it needs")
img = roots[id(runtime)]
runtime_apt = []
uid = gid = None
for st in runtime["steps"]:
    if st[0] == "COPY":
        do_copy(runtime, st[1], st[2], st[3])
    elif st[0] == "RUN":
        body = st[2]
        for m in re.finditer(r"apt-get install\s+(?:-\S+\s+)*([^&;|]+)", body):
            runtime_apt += m.group(1).split()
        m = re.search(r"useradd\b.*?--uid\s+(\d+)", body)
        uid = int(m.group(1)) if m else uid
        m = re.search(r"groupadd\b.*?--gid\s+(\d+)", body)
        gid = int(m.group(1)) if m else gid
print(f"docker-check:   apt-get install: {' '.join(runtime_apt)}; useradd uid {uid}, groupadd gid {gid}", flush=True)
user = runtime["user"] or ""
if not re.fullmatch(r"\d+(:\d+)?", user):
    fail(f"USER {user!r}: give the numeric uid:gid (Kubernetes' runAsNonRoot checks a number)")
elif int(user.split(":")[0]) != uid or (":" in user and int(user.split(":")[1]) != gid):
    fail(f"USER {user} is not the user the image creates ({uid}:{gid})")
if (runtime["stopsignal"] or "SIGTERM") != "SIGTERM":
    fail("STOPSIGNAL: inferd drains on SIGTERM")


def host_codename():
    try:
        return re.search(r"VERSION_CODENAME=(\w+)", Path("/etc/os-release").read_text()).group(1)
    except (OSError, AttributeError):
        return None


def owner(path):
    """The Debian package holding `path` on this host."""
    p = Path(path)
    for cand in {str(p), os.path.realpath(p), "/usr" + str(p), str(p).removeprefix("/usr"),
                 "/usr" + os.path.realpath(p), os.path.realpath(p).removeprefix("/usr")}:
        r = subprocess.run(["dpkg", "-S", cand], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    return None


def base_packages():
    """What a Debian slim image holds: the Essential packages, apt, and everything they depend on."""
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Essential}\t${Pre-Depends}, ${Depends}\n"],
                       capture_output=True, text=True, check=True)
    deps, todo = {}, []
    for line in r.stdout.splitlines():
        name, essential, dep = line.split("\t")
        deps[name] = [re.split(r"[\s(:]", d.strip())[0] for alt in dep.split(",") for d in alt.split("|")[:1]
                      if d.strip()]
        if essential == "yes" or name == "apt":
            todo.append(name)
    seen = set()
    while todo:
        n = todo.pop()
        if n in seen or n not in deps:
            continue
        seen.add(n)
        todo += deps[n]
    return seen


codename = host_codename()
if codename and codename in runtime["base"] and shutil.which("dpkg"):
    base = base_packages()
    needs = {}
    for elf in [p for p in img.rglob("*") if p.is_file() and open(p, "rb").read(4) == b"\x7fELF"]:
        out = subprocess.run(["ldd", str(elf)], capture_output=True, text=True).stdout
        for m in re.finditer(r"^\s*(\S+) => (\S+)", out, re.M):
            if m.group(2) == "not":
                fail(f"{elf.name}: {m.group(1)} not found")
            else:
                needs[m.group(1)] = owner(m.group(2))
    health = runtime["healthcheck"]
    commands = {"HEALTHCHECK": health[0] if health else None}
    deploy = REPO / "deploy/kubernetes/deployment.yaml"
    m = re.search(r"preStop:\s*\n\s*(?:#.*\n\s*)*exec:\s*\n\s*command:\s*\[\s*\"?([\w/.-]+)", deploy.read_text())
    commands["preStop"] = m.group(1) if m else None
    for what, cmd in commands.items():
        if cmd is None:
            fail(f"no {what} command found")
            continue
        path = shutil.which(cmd)
        needs[f"{cmd} ({what})"] = owner(path) if path else None
    for what, pkg in sorted(needs.items()):
        if pkg is None:
            fail(f"{what}: no Debian package provides it here")
        elif pkg not in base and pkg not in runtime_apt:
            fail(f"{what} comes from {pkg}, which neither {runtime['base']} nor the apt-get line installs")
        else:
            src = "apt-get line" if pkg in runtime_apt else "base image"
            print(f"docker-check:   {what}: {pkg} ({src})", flush=True)
else:
    print(f"docker-check:   (skipped: this host is not Debian {runtime['base']})", flush=True)

# ---------------------------------------------------------------- 5. run the image's entrypoint
step("5. run ENTRYPOINT + CMD from the layout, as USER, with ENV")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def in_image(value):
    """An absolute path the image holds, moved to the layout."""
    if isinstance(value, str) and value.startswith("/") and (img / value.lstrip("/")).exists():
        return str(img / value.lstrip("/"))
    return value


http, grpc, metrics = free_ports(3)
argv = [in_image(a) for a in (runtime["entrypoint"] or []) + (runtime["cmd"] or [])]
argv += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
         "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1", "--metrics-address", "127.0.0.1"]
env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "RUST_LOG": "info"}
env.update({k: in_image(v) for k, v in runtime["env"].items()})
prefix = []
if os.geteuid() == 0 and runtime["user"] and shutil.which("setpriv"):
    u, _, g = runtime["user"].partition(":")
    prefix = ["setpriv", f"--reuid={u}", f"--regid={g or u}", "--clear-groups"]
log = tmp / "server.log"
print(f"docker-check:   {' '.join(prefix + argv)}", flush=True)
t0 = time.monotonic()
proc = subprocess.Popen(prefix + argv, cwd=img, env=env, stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                        stderr=subprocess.STDOUT)
try:
    health = [a.replace("127.0.0.1:8000", f"127.0.0.1:{http}") for a in runtime["healthcheck"] or ["false"]]
    ok = False
    while time.monotonic() - t0 < 90 and proc.poll() is None:
        if subprocess.run(health, capture_output=True, env=env).returncode == 0:
            ok = True
            break
        time.sleep(0.5)
    if not ok:
        fail(f"HEALTHCHECK ({' '.join(health)}) never passed; server log:\n" + log.read_text(errors="replace")[-4000:])
    else:
        done(t0, f"HEALTHCHECK passed: {' '.join(health)}")
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        libs = sorted({l.split()[-1] for l in maps.splitlines() if "libonnxruntime" in l})
        if not libs or not all(l.startswith(str(img)) for l in libs):
            fail(f"the server loaded ONNX Runtime from {libs}, not from the image layout")
        else:
            print(f"docker-check:   ONNX Runtime loaded from {os.path.relpath(libs[0], img)} in the layout", flush=True)
        req = urllib.request.Request(f"http://127.0.0.1:{http}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            index = json.load(r)
        states = {m["name"]: m.get("state") for m in index}
        shipped = sorted(p.name for p in (img / "models").iterdir() if p.is_dir())
        print(f"docker-check:   models: {states}", flush=True)
        if not states or any(v != "READY" for v in states.values()) or sorted(states) != shipped:
            fail(f"models in the image {shipped}, served {states}")
finally:
    sig = getattr(signal, runtime["stopsignal"] or "SIGTERM")
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=40)
        if rc != 0:
            fail(f"the server exited {rc} on {runtime['stopsignal'] or 'SIGTERM'}")
        else:
            print(f"docker-check:   exit 0 on {runtime['stopsignal'] or 'SIGTERM'}", flush=True)
    except subprocess.TimeoutExpired:
        proc.kill()
        fail("the server did not stop on SIGTERM")
    if os.environ.get("DOCKER_CHECK_KEEP") == "1":
        print(f"docker-check: kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)

print(f"docker-check: {'FAILED' if failures else 'ok'} ({time.monotonic() - t_start:.0f}s)", flush=True)
sys.exit(1 if failures else 0)
PY
