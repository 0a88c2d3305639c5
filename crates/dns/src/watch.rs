//! The cluster-facing runner: watches Services, EndpointSlices (all namespaces), Pods (only
//! with `pods verified`) and the Corefile ConfigMap, feeding the index one object at a time.
//!
//! Watch errors are retried with kube-runtime's back-off while the last known records keep
//! being served, so DNS answers through an API server restart. A re-list replaces the objects
//! of its kind without a gap: objects missing from the new list are deleted when it ends.

use std::collections::HashSet;
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::corefile::{PodsMode, KUBEADM_DEFAULT};
use crate::records::Index;
use crate::server::{Dns, ServeOptions};
use crate::DnsError;

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Namespace and name of the ConfigMap holding the Corefile.
    pub corefile_configmap: (String, String),
    /// The key of the Corefile in it.
    pub corefile_key: String,
    /// This pod, where events about an invalid Corefile go (else on the ConfigMap).
    pub pod_name: Option<String>,
    /// This pod's namespace.
    pub pod_namespace: Option<String>,
    /// The address the DNS listeners bind.
    pub listen_ip: IpAddr,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            corefile_configmap: ("kube-system".into(), "coredns".into()),
            corefile_key: "Corefile".into(),
            pod_name: None,
            pod_namespace: None,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// Which watches have delivered their first full list.
#[derive(Debug, Default)]
struct Synced {
    services: AtomicBool,
    slices: AtomicBool,
    pods: AtomicBool,
}

/// Runs kins-dns against the cluster until a listener fails.
pub async fn run(client: Client, opts: RunOptions) -> Result<(), DnsError> {
    let (cm_ns, cm_name) = opts.corefile_configmap.clone();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &cm_ns);
    let initial = match configmaps.get_opt(&cm_name).await {
        Ok(cm) => cm.and_then(|cm| corefile_of(&cm, &opts.corefile_key)),
        Err(error) => {
            tracing::warn!(%error, "dns: cannot read the Corefile ConfigMap yet; using the kubeadm default");
            None
        }
    };
    let serve_opts = ServeOptions {
        listen_ip: opts.listen_ip,
        ..ServeOptions::default()
    };
    let mut applied = initial
        .clone()
        .unwrap_or_else(|| KUBEADM_DEFAULT.to_string());
    let dns = match Dns::new(&applied, Index::default(), serve_opts.clone()) {
        Ok(dns) => dns,
        Err(error) => {
            report_invalid(&client, &opts, &error).await;
            applied = KUBEADM_DEFAULT.to_string();
            Dns::new(&applied, Index::default(), serve_opts)?
        }
    };
    dns.start().await?;

    let synced = Arc::new(Synced::default());
    let index = dns.index().clone();
    let services = tokio::spawn(watch_kind::<Service>(
        Api::all(client.clone()),
        index.clone(),
        |i, s| i.apply_service(s),
        |i, ns, n| i.delete_service(ns, n),
        readiness(&dns, &synced, |s| &s.services),
    ));
    let slices = tokio::spawn(watch_kind::<EndpointSlice>(
        Api::all(client.clone()),
        index.clone(),
        |i, s| i.apply_slice(s),
        |i, ns, n| i.delete_slice(ns, n),
        readiness(&dns, &synced, |s| &s.slices),
    ));
    let pods: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::new(Mutex::new(None));
    let start_pods = {
        let (client, dns, synced, pods) =
            (client.clone(), dns.clone(), synced.clone(), pods.clone());
        move || {
            let mut pods = pods.lock().unwrap_or_else(|e| e.into_inner());
            let verified = dns.pods_mode() == PodsMode::Verified;
            match (verified, pods.is_some()) {
                (true, false) => {
                    synced.pods.store(false, Ordering::SeqCst);
                    *pods = Some(tokio::spawn(watch_kind::<Pod>(
                        Api::all(client.clone()),
                        dns.index().clone(),
                        |i, p| i.apply_pod(p),
                        |i, ns, n| i.delete_pod(ns, n),
                        readiness(&dns, &synced, |s| &s.pods),
                    )));
                }
                (false, true) => {
                    if let Some(task) = pods.take() {
                        task.abort();
                    }
                }
                _ => {}
            }
            check_ready(&dns, &synced);
        }
    };
    start_pods();

    let config_task = {
        let (dns, client, opts) = (dns.clone(), client.clone(), opts.clone());
        let wc = watcher::Config::default().fields(&format!("metadata.name={cm_name}"));
        tokio::spawn(async move {
            let mut stream = watcher(configmaps, wc).default_backoff().boxed();
            let mut seen_in_list = false;
            while let Some(event) = stream.next().await {
                let text = match event {
                    Ok(watcher::Event::Init) => {
                        seen_in_list = false;
                        continue;
                    }
                    Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                        seen_in_list = true;
                        corefile_of(&cm, &opts.corefile_key)
                            .unwrap_or_else(|| KUBEADM_DEFAULT.to_string())
                    }
                    Ok(watcher::Event::InitDone) if !seen_in_list => KUBEADM_DEFAULT.to_string(),
                    Ok(watcher::Event::InitDone) => continue,
                    Ok(watcher::Event::Delete(_)) => KUBEADM_DEFAULT.to_string(),
                    Err(error) => {
                        tracing::warn!(%error, "dns: configmap watch failed; retrying");
                        continue;
                    }
                };
                if text == applied {
                    continue;
                }
                match dns.reconfigure(&text).await {
                    Ok(()) => {
                        tracing::info!("plugin/reload: Corefile applied");
                        applied = text;
                        start_pods();
                    }
                    Err(error) => report_invalid(&client, &opts, &error).await,
                }
            }
        })
    };

    let result = tokio::select! {
        r = services => r,
        r = slices => r,
        r = config_task => r,
    };
    dns.shutdown().await;
    result.map_err(|e| DnsError::Config(format!("watch task ended: {e}")))
}

fn corefile_of(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data.as_ref()?.get(key).cloned()
}

fn check_ready(dns: &Dns, synced: &Synced) {
    let pods_ok = dns.pods_mode() != PodsMode::Verified || synced.pods.load(Ordering::SeqCst);
    let ready =
        synced.services.load(Ordering::SeqCst) && synced.slices.load(Ordering::SeqCst) && pods_ok;
    dns.set_ready(ready);
}

fn readiness(
    dns: &Dns,
    synced: &Arc<Synced>,
    flag: fn(&Synced) -> &AtomicBool,
) -> impl Fn() + Send + 'static {
    let (dns, synced) = (dns.clone(), synced.clone());
    move || {
        flag(&synced).store(true, Ordering::SeqCst);
        check_ready(&dns, &synced);
    }
}

/// Watches one kind into the index: apply/delete per event, a re-list replaces the kind's
/// objects, `on_synced` after each full list. Never returns; errors back off and retry.
async fn watch_kind<K>(
    api: Api<K>,
    index: Arc<RwLock<Index>>,
    apply: fn(&mut Index, &K),
    delete: fn(&mut Index, &str, &str),
    on_synced: impl Fn() + Send + 'static,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut known: HashSet<(String, String)> = HashSet::new();
    let mut listing: HashSet<(String, String)> = HashSet::new();
    let write =
        |f: &mut dyn FnMut(&mut Index)| f(&mut index.write().unwrap_or_else(|e| e.into_inner()));
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                write(&mut |i| apply(i, &o));
                listing.insert(key(&o));
            }
            Ok(watcher::Event::InitDone) => {
                for (ns, name) in known.difference(&listing) {
                    write(&mut |i| delete(i, ns, name));
                }
                known = std::mem::take(&mut listing);
                on_synced();
            }
            Ok(watcher::Event::Apply(o)) => {
                write(&mut |i| apply(i, &o));
                known.insert(key(&o));
            }
            Ok(watcher::Event::Delete(o)) => {
                let (ns, name) = key(&o);
                write(&mut |i| delete(i, &ns, &name));
                known.remove(&(ns, name));
            }
            Err(error) => {
                tracing::warn!(kind = std::any::type_name::<K>(), %error, "dns: watch failed; serving the last known records, retrying");
            }
        }
    }
}

/// Logs an invalid Corefile as CoreDNS does and records a Warning event.
async fn report_invalid(client: &Client, opts: &RunOptions, error: &DnsError) {
    eprintln!("[ERROR] plugin/reload: Corefile not applied: {error}");
    let (ns, cm) = &opts.corefile_configmap;
    let object = match (&opts.pod_name, &opts.pod_namespace) {
        (Some(name), pod_ns) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.clone()),
            namespace: Some(pod_ns.clone().unwrap_or_else(|| ns.clone())),
            ..Default::default()
        },
        (None, _) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(cm.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
    };
    let namespace = object.namespace.clone().unwrap_or_else(|| ns.clone());
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                object.name.clone().unwrap_or_default(),
                now.as_nanosecond()
            )),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: object,
        reason: Some("CorefileInvalid".into()),
        message: Some(format!("Corefile not applied: {error}")),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("kins-dns".into()),
            host: None,
        }),
        reporting_component: Some("kins-dns".into()),
        reporting_instance: opts.pod_name.clone(),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(%error, "dns: cannot record the CorefileInvalid event");
    }
}
