#!/usr/bin/env python3
"""Generates crates/api/src/protobuf/schema.rs, the table the Kubernetes protobuf decoder walks.

Reads, from the local cargo registry (~/.cargo/registry/src/*/):
  - k8s-pb 0.9.0 (src/**/mod.rs, prost-generated Kubernetes messages): each field's tag,
    wire type, cardinality and message type;
  - k8s-openapi 0.29.0 (src/v1_*, the union over its Kubernetes versions): each type's JSON
    property names, from the `"jsonName" => Field::Key_rust_name` lines of its Deserialize
    impl.
Both are dependencies of crates/api (k8s-pb a dev-dependency), so `cargo fetch` brings them.
A proto field is matched to the JSON property whose name equals it once underscores are
dropped and case is folded (`cluster_ip` ~ `clusterIP`). A message field that matches no
property but whose message's fields do is a Go `json:",inline"` embedding (Probe.handler,
Volume.volumeSource): its fields are merged into the parent object. A field that matches
nothing is camelCased from its Rust name with a warning on stderr: look at it.

Starting from the root kinds below it emits every reachable message. Well-known apimachinery
messages (Time, MicroTime, Quantity, IntOrString, RawExtension, FieldsV1, Duration) become
dedicated types with their own JSON forms.

Zero values: Go's protobuf marshaller always writes a non-pointer field, even when it is
zero, while Go's JSON encoder leaves a zero `omitempty` field out. OMIT_ZERO below lists the
int, bool and IntOrString fields of the reachable messages that are non-pointer `omitempty`
fields in the Go types (k8s.io/api, k8s.io/apimachinery; kept by hand, as neither crate
says which fields are pointers: `--list-scalars` prints the fields to sort), so the decoder drops their zero the
way the JSON would. Every other int, bool and IntOrString field keeps an explicit zero: Go
pointers (`replicas: 0`, `automountServiceAccountToken: false`, `gracePeriodSeconds: 0`)
and fields without omitempty (`containerPort`, `restartCount`). ScaleSpec.replicas is
omitempty in Go but kept: a Scale to 0 must say so to a JSON reader. Strings and bytes are
dropped when empty (no pointer string of the served kinds means something else by "").

Usage: python3 scripts/gen-protobuf-schema.py [--list-scalars]   (run from the repo root)
"""

import glob
import os
import re
import sys

OUT = "crates/api/src/protobuf/schema.rs"

# (apiVersion, kind, k8s-pb module, message). apiVersion "*" matches any group/version:
# client-go encodes DeleteOptions with the group/version of the client that sends it.
ROOTS = [
    ("v1", "Namespace", "api.core.v1", "Namespace"),
    ("v1", "Node", "api.core.v1", "Node"),
    ("v1", "Pod", "api.core.v1", "Pod"),
    ("v1", "Service", "api.core.v1", "Service"),
    ("v1", "Endpoints", "api.core.v1", "Endpoints"),
    ("v1", "ConfigMap", "api.core.v1", "ConfigMap"),
    ("v1", "Secret", "api.core.v1", "Secret"),
    ("v1", "ServiceAccount", "api.core.v1", "ServiceAccount"),
    ("v1", "Event", "api.core.v1", "Event"),
    ("v1", "Binding", "api.core.v1", "Binding"),
    ("discovery.k8s.io/v1", "EndpointSlice", "api.discovery.v1", "EndpointSlice"),
    ("apps/v1", "Deployment", "api.apps.v1", "Deployment"),
    ("apps/v1", "ReplicaSet", "api.apps.v1", "ReplicaSet"),
    ("networking.k8s.io/v1", "Ingress", "api.networking.v1", "Ingress"),
    ("networking.k8s.io/v1", "IngressClass", "api.networking.v1", "IngressClass"),
    ("networking.k8s.io/v1", "NetworkPolicy", "api.networking.v1", "NetworkPolicy"),
    ("coordination.k8s.io/v1", "Lease", "api.coordination.v1", "Lease"),
    ("autoscaling/v1", "Scale", "api.autoscaling.v1", "Scale"),
    ("authentication.k8s.io/v1", "TokenRequest", "api.authentication.v1", "TokenRequest"),
    ("*", "DeleteOptions", "apimachinery.pkg.apis.meta.v1", "DeleteOptions"),
]

SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time": "Time",
    "apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "apimachinery.pkg.apis.meta.v1.FieldsV1": "FieldsV1",
    "apimachinery.pkg.api.resource.Quantity": "Quantity",
    "apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "apimachinery.pkg.runtime.RawExtension": "RawExtension",
}

# Non-pointer omitempty int/bool/IntOrString fields (Go `T`, not `*T`): "group.version.Message.json".
OMIT_ZERO = set("""
    meta.v1.ObjectMeta.generation
    meta.v1.Condition.observedGeneration
    core.v1.NodeSpec.unschedulable
    core.v1.ContainerImage.sizeBytes
    core.v1.PodSpec.hostNetwork
    core.v1.PodSpec.hostPID
    core.v1.PodSpec.hostIPC
    core.v1.GcePersistentDiskVolumeSource.partition
    core.v1.GcePersistentDiskVolumeSource.readOnly
    core.v1.AwsElasticBlockStoreVolumeSource.partition
    core.v1.AwsElasticBlockStoreVolumeSource.readOnly
    core.v1.NfsVolumeSource.readOnly
    core.v1.IscsiVolumeSource.readOnly
    core.v1.IscsiVolumeSource.chapAuthDiscovery
    core.v1.IscsiVolumeSource.chapAuthSession
    core.v1.GlusterfsVolumeSource.readOnly
    core.v1.PersistentVolumeClaimVolumeSource.readOnly
    core.v1.RbdVolumeSource.readOnly
    core.v1.FlexVolumeSource.readOnly
    core.v1.CinderVolumeSource.readOnly
    core.v1.CephFsVolumeSource.readOnly
    core.v1.FcVolumeSource.readOnly
    core.v1.AzureFileVolumeSource.readOnly
    core.v1.QuobyteVolumeSource.readOnly
    core.v1.PortworxVolumeSource.readOnly
    core.v1.ScaleIoVolumeSource.sslEnabled
    core.v1.ScaleIoVolumeSource.readOnly
    core.v1.StorageOsVolumeSource.readOnly
    core.v1.Container.stdin
    core.v1.Container.stdinOnce
    core.v1.Container.tty
    core.v1.EphemeralContainerCommon.stdin
    core.v1.EphemeralContainerCommon.stdinOnce
    core.v1.EphemeralContainerCommon.tty
    core.v1.ContainerPort.hostPort
    core.v1.VolumeMount.readOnly
    core.v1.Probe.initialDelaySeconds
    core.v1.Probe.timeoutSeconds
    core.v1.Probe.periodSeconds
    core.v1.Probe.successThreshold
    core.v1.Probe.failureThreshold
    core.v1.PodStatus.observedGeneration
    core.v1.PodCondition.observedGeneration
    core.v1.ContainerStateTerminated.signal
    core.v1.VolumeMountStatus.readOnly
    core.v1.ServiceSpec.healthCheckNodePort
    core.v1.ServiceSpec.publishNotReadyAddresses
    core.v1.ServicePort.targetPort
    core.v1.ServicePort.nodePort
    core.v1.Event.count
    core.v1.EventSeries.count
    apps.v1.DeploymentSpec.minReadySeconds
    apps.v1.DeploymentSpec.paused
    apps.v1.DeploymentStatus.observedGeneration
    apps.v1.DeploymentStatus.replicas
    apps.v1.DeploymentStatus.updatedReplicas
    apps.v1.DeploymentStatus.readyReplicas
    apps.v1.DeploymentStatus.availableReplicas
    apps.v1.DeploymentStatus.unavailableReplicas
    apps.v1.ReplicaSetSpec.minReadySeconds
    apps.v1.ReplicaSetStatus.fullyLabeledReplicas
    apps.v1.ReplicaSetStatus.readyReplicas
    apps.v1.ReplicaSetStatus.availableReplicas
    apps.v1.ReplicaSetStatus.observedGeneration
    networking.v1.ServiceBackendPort.number
""".split())

SCALARS = {
    "string": "String",
    "bytes": "Bytes",
    "bool": "Bool",
    "int32": "Int32",
    "int64": "Int64",
    "double": "Double",
}


def registry_dir(name):
    hits = sorted(glob.glob(os.path.expanduser(f"~/.cargo/registry/src/*/{name}/src")))
    if not hits:
        sys.exit(f"gen-protobuf-schema: {name} not found in ~/.cargo/registry/src (run cargo fetch)")
    return hits[-1]


def fold(name):
    return name.replace("r#", "").replace("_", "").lower()


def parse_pb(root):
    """{module: {message: [(rust_name, tag, kind, label, type_path)]}}"""
    messages = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "mod.rs"), recursive=True)):
        module = ".".join(os.path.relpath(os.path.dirname(path), root).split(os.sep))
        lines = open(path, encoding="utf-8").read().split("\n")
        current = None
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            i += 1
            m = re.match(r"pub struct (\w+) \{", line)
            if m:
                current = messages.setdefault(module, {}).setdefault(m.group(1), [])
                continue
            if line == "}":
                current = None
                continue
            m = re.match(r"#\[prost\((.*)\)\]$", line)
            if not m or current is None:
                continue
            attr = m.group(1)
            decl = ""
            while True:
                decl += lines[i].strip()
                i += 1
                if decl.count("<") == decl.count(">") and decl.endswith(","):
                    break
            dm = re.match(r"pub ([\w#]+):\s*(.*),$", decl)
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            ty = dm.group(2)
            mm = re.match(r'btree_map = "string, (\w+)"', attr)
            if mm:
                label, kind = "map", mm.group(1)
                value = re.search(r"String,\s*(.*?),?>$", ty).group(1) if kind == "message" else None
                current.append((dm.group(1), tag, kind, label, resolve(module, value)))
                continue
            kind = re.match(r"(\w+)", attr).group(1)
            label = "repeated" if ", repeated" in attr else "optional"
            target = None
            if kind == "message":
                inner = re.search(r"(?:Option|Vec)<(.*?),?>$", ty).group(1)
                inner = re.sub(r"^::prost::alloc::boxed::Box<(.*)>$", r"\1", inner)
                target = resolve(module, inner)
            elif kind not in SCALARS:
                sys.exit(f"gen-protobuf-schema: unknown prost kind {attr} in {module}")
            current.append((dm.group(1), tag, kind, label, target))
    return messages


def resolve(module, path):
    if path is None:
        return None
    parts = path.split("::")
    base = module.split(".")
    while parts and parts[0] == "super":
        parts.pop(0)
        base.pop()
    return ".".join(base + parts)


def parse_openapi(root):
    """{module.lowercasetype: [jsonName]}, the union over all Kubernetes versions (k8s-pb
    spells HttpGetAction what k8s-openapi spells HTTPGetAction)."""
    props = {}
    versions = sorted(glob.glob(os.path.join(root, "v1_*")), key=lambda p: int(p.rsplit("_", 1)[1]))
    for vdir in versions:
        for path in glob.glob(os.path.join(vdir, "**", "*.rs"), recursive=True):
            text = open(path, encoding="utf-8").read()
            m = re.search(r"pub struct (\w+)", text)
            if not m:
                continue
            module = ".".join(os.path.relpath(os.path.dirname(path), vdir).split(os.sep))
            key = f"{module}.{m.group(1).lower()}"
            names = re.findall(r'"([\w$\-]+)" => Field::Key_', text)
            for name in names:
                if name not in props.setdefault(key, []):
                    props[key].append(name)
    return props


def short(full):
    """api.core.v1.Pod -> core.v1.Pod; apimachinery.pkg.apis.meta.v1.Time -> meta.v1.Time"""
    return re.sub(r"^(api|apimachinery\.pkg\.apis)\.", "", full)


def main():
    pb = parse_pb(registry_dir("k8s-pb-0.9.0"))
    openapi = parse_openapi(registry_dir("k8s-openapi-0.29.0"))

    def fields_of(full):
        module, name = full.rsplit(".", 1)
        try:
            return pb[module][name]
        except KeyError:
            sys.exit(f"gen-protobuf-schema: no message {full} in k8s-pb")

    # Walk reachable messages, recording for each inline-embedded message its parents.
    order, seen = [], set()
    inline_parents = {}

    def props_of(full):
        if full.lower() in openapi:
            return openapi[full.lower()]
        # An inline-only type (ProbeHandler, VolumeSource): its parents' properties.
        names = []
        for parent in inline_parents.get(full, []):
            names += props_of(parent)
        return names

    def is_inline(props, rust, kind, label, target):
        """An unmatched message field all of whose fields are properties of the parent."""
        if fold(rust) in props or kind != "message" or label != "optional" or target in SPECIAL:
            return False
        return all(fold(f[0]) in props for f in fields_of(target))

    def visit(full):
        if full in seen or full in SPECIAL:
            return
        seen.add(full)
        order.append(full)
        props = {fold(p): p for p in props_of(full)}
        for rust, tag, kind, label, target in fields_of(full):
            if is_inline(props, rust, kind, label, target):
                inline_parents.setdefault(target, []).append(full)
            if target:
                visit(target)

    for _, _, module, name in ROOTS:
        visit(f"{module}.{name}")

    warnings = []
    table = {}
    for full in order:
        props = {fold(p): p for p in props_of(full)}
        rows = []
        for rust, tag, kind, label, target in fields_of(full):
            jname = props.get(fold(rust))
            inline = False
            if is_inline(props, rust, kind, label, target):
                inline = True
            elif jname is None:
                jname = re.sub(r"_(\w)", lambda m: m.group(1).upper(), rust.replace("r#", ""))
                warnings.append(f"{full}.{rust}: no JSON property, using {jname}")
            rows.append((tag, jname, kind, label, target, inline))
        table[full] = rows

    if "--list-scalars" in sys.argv:
        for full in order:
            for tag, jname, kind, label, target, inline in table[full]:
                if label == "optional" and (kind in ("bool", "int32", "int64", "double") or SPECIAL.get(target) == "IntOrString"):
                    print(f"{short(full)}.{jname}\t{kind if kind != 'message' else 'IntOrString'}")
        return

    known = {f"{short(full)}.{r[1]}" for full in order for r in table[full]}
    stale = sorted(OMIT_ZERO - known)
    if stale:
        sys.exit(f"gen-protobuf-schema: OMIT_ZERO names unknown fields: {stale}")

    def const(full):
        module, name = short(full).rsplit(".", 1)
        snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
        return (module.replace(".", "_") + "_" + snake).upper()

    def ty(kind, target, inline=False):
        if kind == "message":
            if target in SPECIAL:
                return f"Ty::{SPECIAL[target]}"
            return f"Ty::{'Inline' if inline else 'Message'}(&{const(target)})"
        return f"Ty::{SCALARS[kind]}"

    out = []
    out.append("// generated by scripts/gen-protobuf-schema.py from k8s-pb 0.9.0 and k8s-openapi 0.29.0, do not edit")
    out.append("//! The protobuf schema of every message reachable from the kinds kins serves.")
    out.append("")
    out.append("use super::{Card, Field, Message, Ty};")
    out.append("")
    out.append("/// (apiVersion, kind, message); apiVersion \"*\" matches any.")
    out.append("pub(super) static KINDS: &[(&str, &str, &Message)] = &[")
    for api_version, kind, module, name in ROOTS:
        out.append(f'    ("{api_version}", "{kind}", &{const(module + "." + name)}),')
    out.append("];")
    for full in order:
        out.append("")
        out.append(f"pub(super) static {const(full)}: Message = Message {{")
        out.append(f'    name: "k8s.io.{full}",')
        out.append("    fields: &[")
        for tag, jname, kind, label, target, inline in sorted(table[full]):
            if label == "map":
                card = "Card::Map"
            elif label == "repeated":
                card = "Card::Repeated"
            elif kind in ("string", "bytes") or f"{short(full)}.{jname}" in OMIT_ZERO:
                card = "Card::OmitZero"
            else:
                card = "Card::Optional"
            json = "" if inline else jname
            out.append(f'        Field {{ tag: {tag}, json: "{json}", ty: {ty(kind, target, inline)}, card: {card} }},')
        out.append("    ],")
        out.append("};")
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {OUT}: {len(order)} messages", file=sys.stderr)


if __name__ == "__main__":
    main()
