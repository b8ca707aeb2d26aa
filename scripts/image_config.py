#!/usr/bin/env python3
"""The image configuration a Dockerfile declares, for scripts/images.sh.

The Dockerfiles are the one place an image's configuration is written (binary path, user,
environment, ports, entrypoint, labels). scripts/images.sh assembles the same image without a
Docker daemon or a registry; this reads the Dockerfile's final stage so both paths build the
same thing, and checks the assembled image against it so they cannot drift.

  image_config.py buildah-args DOCKERFILE        `buildah config` arguments, NUL-separated
  image_config.py binary DOCKERFILE              where the final stage puts the binary
  image_config.py check DOCKERFILE INSPECT ROOTFS
      compare `buildah inspect --type image` output (file INSPECT) and the image's mounted root
      filesystem with what the Dockerfile (and its base image) declare; exit 1 on a difference
  image_config.py run INSPECT ROOTFS [--env K=V]... -- ARGS...
      run the image the way a container runtime would: chroot into ROOTFS, change to its
      WorkingDir, drop to its User (no supplementary groups) and exec its Entrypoint + ARGS with
      its Env (+ --env, + HOME from the image's passwd). Needs root (chroot).
"""
import json
import os
import shlex
import sys

# What the Dockerfiles' base image brings to the configuration (the Dockerfile does not say it;
# scripts/images.sh builds from scratch, so it sets these too). A new base must be added here.
BASES = {
    "gcr.io/distroless/cc-debian12:nonroot": {
        "user": "65532",
        "workdir": "/home/nonroot",
        "env": {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        },
    },
}


class DockerfileError(Exception):
    pass


def instructions(text):
    """(INSTRUCTION, rest) of every instruction, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def pairs(rest):
    """KEY=VALUE pairs of an ENV or LABEL instruction (also the old `ENV KEY VALUE` form)."""
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    result = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise DockerfileError(f"not KEY=VALUE: {word!r} in {rest!r}")
        result[key] = value
    return result


def declared(path):
    """The configuration of the Dockerfile's final stage, its base image's included."""
    steps = instructions(open(path, encoding="utf-8").read())
    starts = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    if not starts:
        raise DockerfileError(f"{path}: no FROM")
    base = steps[starts[-1]][1].split()[0]
    if base not in BASES:
        raise DockerfileError(f"{path}: base {base} unknown; say in BASES what it brings")
    known = BASES[base]
    config = {
        "user": known["user"],
        "workdir": known["workdir"],
        "env": dict(known["env"]),
        "ports": [],
        "entrypoint": None,
        "labels": {},
        "binary": None,
    }
    for word, rest in steps[starts[-1] + 1:]:
        if word == "USER":
            config["user"] = rest
        elif word == "WORKDIR":
            config["workdir"] = rest
        elif word == "ENV":
            config["env"].update(pairs(rest))
        elif word == "LABEL":
            config["labels"].update(pairs(rest))
        elif word == "EXPOSE":
            config["ports"] += [p if "/" in p else p + "/tcp" for p in rest.split()]
        elif word == "ENTRYPOINT":
            config["entrypoint"] = json.loads(rest)
        elif word == "COPY":
            words = [w for w in rest.split() if not w.startswith("--")]
            config["binary"] = words[-1]
        else:
            # RUN, CMD, VOLUME, ... would be something the assembled image does not do.
            raise DockerfileError(f"{path}: {word} in the final stage is not assembled by images.sh")
    if not config["entrypoint"] or config["entrypoint"][0] != config["binary"]:
        raise DockerfileError(f"{path}: the ENTRYPOINT must run the binary COPY puts in place")
    return config


def buildah_args(config):
    args = ["--user", config["user"], "--workingdir", config["workdir"],
            "--entrypoint", json.dumps(config["entrypoint"])]
    for key, value in config["env"].items():
        args += ["--env", f"{key}={value}"]
    for port in config["ports"]:
        args += ["--port", port]
    for key, value in config["labels"].items():
        args += ["--label", f"{key}={value}"]
    return args


def image_config(inspect_path):
    with open(inspect_path, encoding="utf-8") as f:
        return json.load(f)["OCIv1"]["config"]


def differences(config, image, rootfs):
    """What the image has that the Dockerfile does not say, and the reverse."""
    found = []

    def same(what, want, got):
        if want != got:
            found.append(f"{what}: Dockerfile {want!r}, image {got!r}")

    same("USER", config["user"], image.get("User"))
    same("WORKDIR", config["workdir"], image.get("WorkingDir"))
    same("ENTRYPOINT", config["entrypoint"], image.get("Entrypoint"))
    same("CMD", None, image.get("Cmd") or None)
    env = dict(e.split("=", 1) for e in image.get("Env") or [])
    same("ENV", config["env"], env)
    same("EXPOSE", sorted(config["ports"]), sorted(image.get("ExposedPorts") or {}))
    labels = {k: v for k, v in (image.get("Labels") or {}).items()
              if not k.startswith("io.buildah.")}
    same("LABEL", config["labels"], labels)
    binary = os.path.join(rootfs, config["binary"].lstrip("/"))
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        found.append(f"COPY: no executable at {config['binary']} in the image")
    uid = config["user"].split(":")[0]
    if not any(line.split(":")[2] == uid for line in passwd(rootfs)):
        found.append(f"USER: uid {uid} has no /etc/passwd entry")
    for directory in ("tmp", config["workdir"].lstrip("/")):
        if not os.path.isdir(os.path.join(rootfs, directory)):
            found.append(f"/{directory} is missing")
    return found


def passwd(rootfs):
    with open(os.path.join(rootfs, "etc/passwd"), encoding="utf-8") as f:
        return [line for line in f.read().splitlines() if line.count(":") >= 6]


def run(image, rootfs, extra_env, args):
    """Exec the image's entrypoint in its root filesystem as its user, like a runtime."""
    user, _, group = image["User"].partition(":")
    uid, gid = int(user), int(group or user)
    env = dict(e.split("=", 1) for e in image.get("Env") or [])
    for line in passwd(rootfs):
        fields = line.split(":")
        if int(fields[2]) == uid:
            env.setdefault("HOME", fields[5])
    env.update(extra_env)
    os.chroot(rootfs)
    os.chdir(image.get("WorkingDir") or "/")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    argv = list(image["Entrypoint"]) + args
    os.execve(argv[0], argv, env)


def main(argv):
    command = argv[1] if len(argv) > 1 else ""
    if command == "buildah-args" and len(argv) == 3:
        sys.stdout.write("\0".join(buildah_args(declared(argv[2]))) + "\0")
    elif command == "binary" and len(argv) == 3:
        print(declared(argv[2])["binary"])
    elif command == "check" and len(argv) == 5:
        found = differences(declared(argv[2]), image_config(argv[3]), argv[4])
        for problem in found:
            print(f"FAIL {argv[2]}: {problem}", file=sys.stderr)
        if found:
            return 1
        print(f"{argv[2]}: the image has its final stage's user, workdir, env, ports, "
              "entrypoint, labels and binary")
    elif command == "run" and len(argv) >= 4 and "--" in argv:
        split = argv.index("--")
        options, args = argv[4:split], argv[split + 1:]
        extra = dict(options[i + 1].split("=", 1) for i in range(0, len(options), 2)
                     if options[i] == "--env")
        run(image_config(argv[2]), argv[3], extra, args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except DockerfileError as e:
        print(f"FAIL {e}", file=sys.stderr)
        sys.exit(1)
