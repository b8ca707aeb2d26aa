"""A small fake Kubernetes API server, just enough for `helm install --wait=false` through
helm-sdkpy: discovery for the kinds the chart uses, create/get/list/replace/patch/delete kept
in memory, CRDs reported Established. It records every object Helm sends, so the test can
validate what Helm itself rendered (helm-sdkpy has no `template`/dry-run). Binds 127.0.0.1
on a random port only."""

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# group/version -> [(resource, kind, namespaced)]
RESOURCES = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("events", "Event", True),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
    ],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "apiextensions.k8s.io/v1": [
        ("customresourcedefinitions", "CustomResourceDefinition", False)
    ],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True),
                                 ("podmonitors", "PodMonitor", True),
                                 ("prometheusrules", "PrometheusRule", True)],
    "sgcache.io/v1alpha1": [("shotguncaches", "ShotgunCache", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def resource_list(gv):
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": [
            {"name": r, "singularName": k.lower(), "namespaced": ns, "kind": k, "verbs": VERBS}
            for r, k, ns in RESOURCES[gv]
        ],
    }


def group_list():
    groups = []
    for gv in RESOURCES:
        if "/" not in gv:
            continue
        group, version = gv.split("/")
        v = {"groupVersion": gv, "version": version}
        groups.append({"name": group, "versions": [v], "preferredVersion": v})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeApiServer:
    def __init__(self):
        self.objects = {}  # item path -> object
        self.requests = []  # (method, path)
        self.created = []  # objects as POSTed/PUT, in order
        self.lock = threading.Lock()
        self.version = 0
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self):
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": "default"}}],
            "users": [{"name": "fake", "user": {}}],
        })

    def store(self, path, obj, method):
        with self.lock:
            # Recorded as sent, before the server's own fields are added.
            self.created.append((method, json.loads(json.dumps(obj))))
            self.version += 1
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.version)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            if obj.get("kind") == "CustomResourceDefinition":
                obj["status"] = {"conditions": [
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                ], "acceptedNames": obj["spec"]["names"], "storedVersions": ["v1alpha1"]}
            self.objects[path] = obj
            return obj


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if "protobuf" in (self.headers.get("Content-Type") or ""):
            # Only Helm's own release Secret comes as protobuf; keep its name, not its bytes.
            name = re.search(rb"sh\.helm\.release\.v1\.[a-z0-9.-]+", raw)
            meta = {"name": name.group().decode() if name else "unknown", "namespace": "default"}
            return {"kind": "Secret", "apiVersion": "v1", "metadata": meta, "protobuf": True}
        return json.loads(raw) if raw else {}

    def route(self):
        """(path without query, gv, resource, is_collection) for an object path, else None."""
        path = urlsplit(self.path).path.rstrip("/")
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            gv, rest = "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return path, None, None, False
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
            rest = rest[2:]
        if not rest:
            return path, gv, None, False
        return path, gv, rest[0], len(rest) == 1

    def handle_any(self, method):
        path, gv, resource, collection = self.route()
        self.api.requests.append((method, self.path))
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                    "platform": "linux/amd64"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": []})
        if path == "/apis":
            return self.reply(200, group_list())
        if gv is not None and resource is None:
            if gv in RESOURCES:
                return self.reply(200, resource_list(gv))
            return self.reply(404, status(404, "NotFound", path))
        if gv is None:
            return self.reply(404, status(404, "NotFound", path))
        if method == "GET" and collection:
            kind = next((k for r, k, _ in RESOURCES.get(gv, []) if r == resource), "")
            prefix = path + "/"
            items = [o for p, o in self.api.objects.items() if p.startswith(prefix)]
            return self.reply(200, {"kind": kind + "List", "apiVersion": gv,
                                    "metadata": {"resourceVersion": str(self.api.version)},
                                    "items": items})
        if method == "GET":
            obj = self.api.objects.get(path)
            return self.reply(200, obj) if obj else self.reply(404, status(404, "NotFound", path))
        if method == "POST" and collection:
            obj = self.body()
            item = f"{path}/{obj['metadata']['name']}"
            if item in self.api.objects:
                return self.reply(409, status(409, "AlreadyExists", item))
            return self.reply(201, self.api.store(item, obj, method))
        if method == "PUT":
            return self.reply(200, self.api.store(path, self.body(), method))
        if method == "PATCH":
            obj = self.api.objects.get(path)
            self.body()
            return self.reply(200, obj) if obj else self.reply(404, status(404, "NotFound", path))
        if method == "DELETE":
            obj = self.api.objects.pop(path, None)
            return self.reply(200, obj) if obj else self.reply(404, status(404, "NotFound", path))
        return self.reply(405, status(405, "MethodNotAllowed", path))

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")
