//! The REST operations of every served resource, in a form neutral between OpenAPI v3 and
//! Swagger 2.0: the paths, verbs, parameters, bodies, responses and the `x-kubernetes-*`
//! extensions Kubernetes puts on operations, named and shaped as Kubernetes' own documents.

use crate::resources::Resource;

use super::schemas::{self, Catalog};

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum In {
    Path,
    Query,
}

/// One parameter of an operation or a path.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub name: &'static str,
    pub location: In,
    /// "string", "integer" or "boolean".
    pub ty: &'static str,
    pub description: String,
}

/// What an operation takes as its body.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// An object of this definition (create, replace).
    Object(String),
    /// A patch in one of [`PATCH_TYPES`].
    Patch,
    /// Optional `DeleteOptions`.
    DeleteOptions,
}

/// What a successful operation answers.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// An object of this definition.
    Object(String),
    /// Plain text (pod logs).
    Text,
}

/// The group, version and kind an operation is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gvk {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
}

/// One operation.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    /// Lower-case HTTP method.
    pub method: &'static str,
    pub id: String,
    pub description: String,
    pub tag: String,
    /// `x-kubernetes-action`: get, list, post, put, patch, delete, deletecollection.
    pub action: &'static str,
    pub gvk: Gvk,
    pub query: Vec<Param>,
    pub body: Option<Body>,
    pub answer: Answer,
    /// Success codes answered with `answer`.
    pub codes: &'static [u16],
    /// The answer can also be a watch stream.
    pub watch: bool,
}

/// One path and its operations.
#[derive(Debug, Clone)]
pub(crate) struct PathItem {
    pub path: String,
    pub params: Vec<Param>,
    pub ops: Vec<Operation>,
}

/// The patch media types the API server accepts.
pub(crate) const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

fn query(name: &'static str, ty: &'static str, description: &str) -> Param {
    Param {
        name,
        location: In::Query,
        ty,
        description: description.to_string(),
    }
}

fn pretty() -> Param {
    query(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
    )
}

fn dry_run() -> Param {
    query(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
    )
}

fn field_manager(patch: bool) -> Param {
    let required = if patch {
        " This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch)."
    } else {
        ""
    };
    query(
        "fieldManager",
        "string",
        &format!("fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.{required}"),
    )
}

fn field_validation() -> Param {
    query(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
    )
}

/// The query parameters of writes: create and replace.
fn write_params() -> Vec<Param> {
    vec![dry_run(), field_manager(false), field_validation()]
}

/// The query parameters of a patch. kubectl looks for `fieldValidation` here to decide that
/// the server validates (and `dryRun` for server-side dry runs).
fn patch_params() -> Vec<Param> {
    vec![
        dry_run(),
        field_manager(true),
        field_validation(),
        query(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        ),
    ]
}

fn list_params() -> Vec<Param> {
    vec![
        query("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored."),
        query("continue", "string", "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize."),
        query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        query("limit", "integer", "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results."),
        query("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details. Defaults to unset"),
        query("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details. Defaults to unset"),
        query("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event will be sent. The bookmark will report the ResourceVersion (RV) corresponding to the set of objects, and be marked with `\"k8s.io/initial-events-end\": \"true\"` annotation."),
        query("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity."),
        query("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."),
    ]
}

fn delete_params() -> Vec<Param> {
    vec![
        dry_run(),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately."),
        query("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer constraints, skips precondition checks, and removes the object from the storage. WARNING: This may potentially break the cluster if the workload associated with the resource being unsafe-deleted relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is false, and the user must opt in to enable it"),
        query("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both."),
        query("propagationPolicy", "string", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground."),
    ]
}

fn delete_collection_params() -> Vec<Param> {
    let mut params = delete_params();
    params.extend(
        list_params()
            .into_iter()
            .filter(|p| !matches!(p.name, "allowWatchBookmarks" | "watch")),
    );
    params.sort_by_key(|p| p.name);
    params
}

fn log_params() -> Vec<Param> {
    vec![
        query("container", "string", "The container for which to stream logs. Defaults to only container if there is one container in the pod."),
        query("follow", "boolean", "Follow the log stream of the pod. Defaults to false."),
        query("insecureSkipTLSVerifyBackend", "boolean", "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to."),
        query("limitBytes", "integer", "If set, the number of bytes to read from the server before terminating the log output. This may not display a complete final line of logging, and may return slightly more or slightly less than the specified limit."),
        query("previous", "boolean", "Return previous terminated container logs. Defaults to false."),
        query("sinceSeconds", "integer", "A relative time in seconds before the current time from which to show logs. If this value precedes the time a pod was started, only logs since the pod start will be returned. If this value is in the future, no logs will be returned. Only one of sinceSeconds or sinceTime may be specified."),
        query("stream", "string", "Specify which container log stream to return to the client. Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" is used, and both stdout and stderr are returned interleaved."),
        query("tailLines", "integer", "If set, the number of lines from the end of the logs to show. If not specified, logs are shown from the creation of the container or sinceSeconds or sinceTime. Note that when \"TailLines\" is specified, \"Stream\" can only be set to nil or \"All\"."),
        query("timestamps", "boolean", "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false."),
    ]
}

fn path_param(name: &'static str, description: String) -> Param {
    Param {
        name,
        location: In::Path,
        ty: "string",
        description,
    }
}

/// "CoreV1", "AppsV1", "NetworkingV1": the group-version part of Kubernetes' operation ids.
fn gv_id(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("{}{}", capitalize(group), capitalize(version))
}

/// "core_v1", "apps_v1", "networking_v1": the operation tag.
fn tag(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("{group}_{version}")
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The URL prefix of a group-version: `/api/v1` or `/apis/<group>/<version>`.
pub(crate) fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// Every path of the resources of `group/version`, in registry order.
pub(crate) fn paths(catalog: &Catalog, group: &str, version: &str) -> Vec<PathItem> {
    crate::resources::RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| resource_paths(catalog, r))
        .collect()
}

/// The paths of one resource: its collection, its objects, its subresources (status, scale,
/// binding, log and finalize; others are left out).
fn resource_paths(catalog: &Catalog, r: &'static Resource) -> Vec<PathItem> {
    let Some(def) = catalog.definition(r.group, r.version, r.kind) else {
        return Vec::new();
    };
    let def = def.to_string();
    let list_def = catalog
        .definition(r.group, r.version, r.list_kind)
        .map_or_else(|| format!("{def}List"), str::to_string);
    let gvk = Gvk {
        group: r.group,
        version: r.version,
        kind: r.kind,
    };
    let gv = gv_id(r.group, r.version);
    let tag = tag(r.group, r.version);
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let base = prefix(r.group, r.version);
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let namespace_param = || {
        path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects".into(),
        )
    };
    let name_param = |what: &str| path_param("name", format!("name of the {what}"));
    let op = |method: &'static str,
              verb: &str,
              suffix: &str,
              description: String,
              action: &'static str,
              gvk: Gvk| Operation {
        method,
        id: format!("{verb}{gv}{suffix}"),
        description,
        tag: tag.clone(),
        action,
        gvk,
        query: Vec::new(),
        body: None,
        answer: Answer::Object(def.clone()),
        codes: &[200],
        watch: false,
    };
    let kind = r.kind;
    let mut items = Vec::new();

    // The collection: list, create, delete collection.
    let mut collection_params = vec![pretty()];
    if r.namespaced {
        collection_params.insert(0, namespace_param());
    }
    items.push(PathItem {
        path: collection.clone(),
        params: collection_params,
        ops: vec![
            Operation {
                query: list_params(),
                answer: Answer::Object(list_def.clone()),
                watch: true,
                ..op(
                    "get",
                    "list",
                    &format!("{scope}{kind}"),
                    format!("list or watch objects of kind {kind}"),
                    "list",
                    gvk,
                )
            },
            Operation {
                query: write_params(),
                body: Some(Body::Object(def.clone())),
                codes: &[200, 201, 202],
                ..op(
                    "post",
                    "create",
                    &format!("{scope}{kind}"),
                    format!("create a {kind}"),
                    "post",
                    gvk,
                )
            },
            Operation {
                query: delete_collection_params(),
                body: Some(Body::DeleteOptions),
                answer: Answer::Object(schemas::STATUS.into()),
                ..op(
                    "delete",
                    "delete",
                    &format!("Collection{scope}{kind}"),
                    format!("delete collection of {kind}"),
                    "deletecollection",
                    gvk,
                )
            },
        ],
    });
    if r.namespaced {
        items.push(PathItem {
            path: format!("{base}/{}", r.plural),
            params: vec![pretty()],
            ops: vec![Operation {
                query: list_params(),
                answer: Answer::Object(list_def.clone()),
                watch: true,
                ..op(
                    "get",
                    "list",
                    &format!("{kind}ForAllNamespaces"),
                    format!("list or watch objects of kind {kind}"),
                    "list",
                    gvk,
                )
            }],
        });
    }

    // One object: read, replace, patch, delete.
    let object_params = |what: &str| {
        let mut p = vec![name_param(what)];
        if r.namespaced {
            p.push(namespace_param());
        }
        p.push(pretty());
        p
    };
    items.push(PathItem {
        path: format!("{collection}/{{name}}"),
        params: object_params(kind),
        ops: vec![
            op(
                "get",
                "read",
                &format!("{scope}{kind}"),
                format!("read the specified {kind}"),
                "get",
                gvk,
            ),
            Operation {
                query: write_params(),
                body: Some(Body::Object(def.clone())),
                codes: &[200, 201],
                ..op(
                    "put",
                    "replace",
                    &format!("{scope}{kind}"),
                    format!("replace the specified {kind}"),
                    "put",
                    gvk,
                )
            },
            Operation {
                query: patch_params(),
                body: Some(Body::Patch),
                codes: &[200, 201],
                ..op(
                    "patch",
                    "patch",
                    &format!("{scope}{kind}"),
                    format!("partially update the specified {kind}"),
                    "patch",
                    gvk,
                )
            },
            Operation {
                query: delete_params(),
                body: Some(Body::DeleteOptions),
                answer: Answer::Object(schemas::STATUS.into()),
                codes: &[200, 202],
                ..op(
                    "delete",
                    "delete",
                    &format!("{scope}{kind}"),
                    format!("delete a {kind}"),
                    "delete",
                    gvk,
                )
            },
        ],
    });

    // Subresources.
    for sub in r.subresources {
        let path = format!("{collection}/{{name}}/{sub}");
        let suffix = format!("{scope}{kind}{}", capitalize(sub));
        match *sub {
            "status" => {
                items.push(PathItem {
                    path,
                    params: object_params(kind),
                    ops: read_replace_patch(
                        &op,
                        &suffix,
                        &format!("status of the specified {kind}"),
                        gvk,
                        def.clone(),
                    ),
                });
            }
            "scale" => {
                let Some(scale) = catalog.definition("autoscaling", "v1", "Scale") else {
                    continue;
                };
                let scale_gvk = Gvk {
                    group: "autoscaling",
                    version: "v1",
                    kind: "Scale",
                };
                let mut ops = read_replace_patch(
                    &op,
                    &suffix,
                    &format!("scale of the specified {kind}"),
                    scale_gvk,
                    scale.to_string(),
                );
                for o in &mut ops {
                    o.answer = Answer::Object(scale.to_string());
                }
                items.push(PathItem {
                    path,
                    params: object_params("Scale"),
                    ops,
                });
            }
            "binding" => {
                let Some(binding) = catalog.definition("", "v1", "Binding") else {
                    continue;
                };
                let binding_gvk = Gvk {
                    group: "",
                    version: "v1",
                    kind: "Binding",
                };
                items.push(PathItem {
                    path,
                    params: object_params("Binding"),
                    ops: vec![Operation {
                        query: write_params(),
                        body: Some(Body::Object(binding.to_string())),
                        answer: Answer::Object(binding.to_string()),
                        codes: &[200, 201, 202],
                        ..op(
                            "post",
                            "create",
                            &suffix,
                            format!("create binding of a {kind}"),
                            "post",
                            binding_gvk,
                        )
                    }],
                });
            }
            "log" => {
                items.push(PathItem {
                    path,
                    params: object_params(kind),
                    ops: vec![Operation {
                        query: log_params(),
                        answer: Answer::Text,
                        ..op(
                            "get",
                            "read",
                            &suffix,
                            format!("read log of the specified {kind}"),
                            "get",
                            gvk,
                        )
                    }],
                });
            }
            "token" => {
                let Some(request) =
                    catalog.definition("authentication.k8s.io", "v1", "TokenRequest")
                else {
                    continue;
                };
                let request_gvk = Gvk {
                    group: "authentication.k8s.io",
                    version: "v1",
                    kind: "TokenRequest",
                };
                items.push(PathItem {
                    path,
                    params: object_params("TokenRequest"),
                    ops: vec![Operation {
                        query: write_params(),
                        body: Some(Body::Object(request.to_string())),
                        answer: Answer::Object(request.to_string()),
                        codes: &[200, 201, 202],
                        ..op(
                            "post",
                            "create",
                            &suffix,
                            format!("create token of a {kind}"),
                            "post",
                            request_gvk,
                        )
                    }],
                });
            }
            "finalize" => {
                items.push(PathItem {
                    path,
                    params: object_params(kind),
                    ops: vec![Operation {
                        query: write_params(),
                        body: Some(Body::Object(def.clone())),
                        codes: &[200, 201],
                        ..op(
                            "put",
                            "replace",
                            &suffix,
                            format!("replace finalize of the specified {kind}"),
                            "put",
                            gvk,
                        )
                    }],
                });
            }
            _ => {}
        }
    }
    items
}

/// get, put and patch of a subresource holding `def` objects.
fn read_replace_patch(
    op: &impl Fn(&'static str, &str, &str, String, &'static str, Gvk) -> Operation,
    suffix: &str,
    what: &str,
    gvk: Gvk,
    def: String,
) -> Vec<Operation> {
    vec![
        op("get", "read", suffix, format!("read {what}"), "get", gvk),
        Operation {
            query: write_params(),
            body: Some(Body::Object(def)),
            codes: &[200, 201],
            ..op(
                "put",
                "replace",
                suffix,
                format!("replace {what}"),
                "put",
                gvk,
            )
        },
        Operation {
            query: patch_params(),
            body: Some(Body::Patch),
            codes: &[200, 201],
            ..op(
                "patch",
                "patch",
                suffix,
                format!("partially update {what}"),
                "patch",
                gvk,
            )
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tags() {
        assert_eq!(gv_id("", "v1"), "CoreV1");
        assert_eq!(gv_id("networking.k8s.io", "v1"), "NetworkingV1");
        assert_eq!(gv_id("apps", "v1beta2"), "AppsV1beta2");
        assert_eq!(tag("discovery.k8s.io", "v1"), "discovery_v1");
        assert_eq!(prefix("", "v1"), "/api/v1");
        assert_eq!(prefix("apps", "v1"), "/apis/apps/v1");
    }

    #[test]
    fn pod_paths() {
        let items = paths(schemas::catalog(), "", "v1");
        let find = |p: &str| {
            items
                .iter()
                .find(|i| i.path == p)
                .unwrap_or_else(|| panic!("no path {p}"))
        };
        let pod = find("/api/v1/namespaces/{namespace}/pods/{name}");
        let ids: Vec<&str> = pod.ops.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "readCoreV1NamespacedPod",
                "replaceCoreV1NamespacedPod",
                "patchCoreV1NamespacedPod",
                "deleteCoreV1NamespacedPod"
            ]
        );
        find("/api/v1/pods");
        find("/api/v1/namespaces/{namespace}/pods/{name}/status");
        find("/api/v1/namespaces/{namespace}/pods/{name}/binding");
        let log = find("/api/v1/namespaces/{namespace}/pods/{name}/log");
        assert_eq!(log.ops[0].id, "readCoreV1NamespacedPodLog");
        let finalize = find("/api/v1/namespaces/{name}/finalize");
        assert_eq!(finalize.ops[0].id, "replaceCoreV1NamespaceFinalize");
        let nodes = find("/api/v1/nodes");
        assert_eq!(nodes.ops[2].id, "deleteCoreV1CollectionNode");
        let apps = paths(schemas::catalog(), "apps", "v1");
        let scale = apps
            .iter()
            .find(|i| i.path == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale")
            .expect("deployments have scale");
        assert_eq!(scale.ops[2].id, "patchAppsV1NamespacedDeploymentScale");
        assert_eq!(scale.ops[2].gvk.kind, "Scale");
    }
}
