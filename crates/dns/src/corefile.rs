//! Parser for the subset of CoreDNS's `Corefile` that a Kubernetes cluster uses.
//!
//! The input is the text of the `Corefile` key of the `kube-system/coredns` ConfigMap; the
//! output is a typed [`Corefile`]. Parsing happens in two steps: [`lex`] and [`parse_raw`] turn
//! the text into server blocks of directives (the Caddyfile syntax, knowing no plugin), then
//! one function per plugin turns each directive into a [`Plugin`].
//!
//! This module does no IO: a `forward . /etc/resolv.conf` or `hosts /etc/hosts` keeps the path,
//! and the caller reads the file.
//!
//! Not supported (each is an error, never silently ignored): environment variables
//! (`{$VAR}`), `import` and snippets, server blocks without braces, transports other than
//! `dns://`, CIDR zones, and any plugin or option not listed on the types below.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The Corefile kubeadm writes into the `coredns` ConfigMap.
pub const KUBEADM_DEFAULT: &str = api::addons::COREFILE;

/// The port a server block listens on when its keys name none.
pub const DEFAULT_PORT: u16 = 53;

/// CoreDNS refuses more upstreams than this in one `forward`.
pub const MAX_UPSTREAMS: usize = 15;

/// A Corefile that failed to parse: the 1-based line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CorefileError {
    /// 1-based line of the offending token.
    pub line: usize,
    /// What is wrong, lower case, without the line.
    pub message: String,
}

impl CorefileError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        CorefileError {
            line,
            message: message.into(),
        }
    }
}

type Result<T, E = CorefileError> = std::result::Result<T, E>;

/// A parsed Corefile: its server blocks in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Corefile {
    pub servers: Vec<ServerBlock>,
}

impl Corefile {
    /// The server block answering `name` on `port`: the one whose zone is the longest suffix
    /// of `name` (CoreDNS's rule), or `None` when no zone covers it.
    pub fn server_for(&self, name: &str, port: u16) -> Option<&ServerBlock> {
        let name = fqdn_lossy(name);
        self.servers
            .iter()
            .filter(|s| s.port == port)
            .flat_map(|s| s.zones.iter().map(move |z| (z, s)))
            .filter(|(zone, _)| in_zone(&name, zone))
            .max_by_key(|(zone, _)| zone.len())
            .map(|(_, s)| s)
    }
}

/// One `ZONE[:PORT]... { ... }` block.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerBlock {
    /// Lower case, fully qualified with a trailing dot, `"."` for the root.
    pub zones: Vec<String>,
    pub port: u16,
    /// In file order.
    pub plugins: Vec<Plugin>,
}

impl ServerBlock {
    pub fn kubernetes(&self) -> Option<&Kubernetes> {
        self.plugins.iter().find_map(|p| match p {
            Plugin::Kubernetes(k) => Some(k),
            _ => None,
        })
    }

    pub fn forward(&self) -> Option<&Forward> {
        self.plugins.iter().find_map(|p| match p {
            Plugin::Forward(f) => Some(f),
            _ => None,
        })
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.plugins.iter().find_map(|p| match p {
            Plugin::Cache(c) => Some(c),
            _ => None,
        })
    }

    pub fn health(&self) -> Option<&Health> {
        self.plugins.iter().find_map(|p| match p {
            Plugin::Health(h) => Some(h),
            _ => None,
        })
    }

    /// Every `hosts` plugin, in file order.
    pub fn hosts(&self) -> impl Iterator<Item = &Hosts> {
        self.plugins.iter().filter_map(|p| match p {
            Plugin::Hosts(h) => Some(h),
            _ => None,
        })
    }

    /// Every `rewrite` rule, in file order.
    pub fn rewrites(&self) -> impl Iterator<Item = &Rewrite> {
        self.plugins.iter().filter_map(|p| match p {
            Plugin::Rewrite(r) => Some(r),
            _ => None,
        })
    }

    /// Whether a plugin of this name (`"errors"`, `"loop"`, ...) is present.
    pub fn has(&self, name: &str) -> bool {
        self.plugins.iter().any(|p| p.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plugin {
    Errors,
    Log,
    Health(Health),
    Ready(SocketAddr),
    Kubernetes(Kubernetes),
    Prometheus(SocketAddr),
    Forward(Forward),
    Cache(Cache),
    Hosts(Hosts),
    Rewrite(Rewrite),
    Loop,
    /// The check interval; the jitter is validated and dropped.
    Reload(Duration),
    LoadBalance,
    Whoami,
    Debug,
}

impl Plugin {
    /// The directive name as written in a Corefile.
    pub fn name(&self) -> &'static str {
        match self {
            Plugin::Errors => "errors",
            Plugin::Log => "log",
            Plugin::Health(_) => "health",
            Plugin::Ready(_) => "ready",
            Plugin::Kubernetes(_) => "kubernetes",
            Plugin::Prometheus(_) => "prometheus",
            Plugin::Forward(_) => "forward",
            Plugin::Cache(_) => "cache",
            Plugin::Hosts(_) => "hosts",
            Plugin::Rewrite(_) => "rewrite",
            Plugin::Loop => "loop",
            Plugin::Reload(_) => "reload",
            Plugin::LoadBalance => "loadbalance",
            Plugin::Whoami => "whoami",
            Plugin::Debug => "debug",
        }
    }
}

/// `health [ADDR] { lameduck DUR }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Default `0.0.0.0:8080`.
    pub addr: SocketAddr,
    /// Default zero.
    pub lameduck: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            addr: any_addr(8080),
            lameduck: Duration::ZERO,
        }
    }
}

/// `kubernetes [ZONES...] { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Kubernetes {
    /// The server block's zones when none are given.
    pub zones: Vec<String>,
    pub pods: PodsMode,
    /// `Some(empty)` falls through for every zone.
    pub fallthrough: Option<Vec<String>>,
    /// 0..=3600, default 5.
    pub ttl: u32,
    pub endpoint_pod_names: bool,
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    pub noendpoints: bool,
    pub ignore_empty_service: bool,
}

impl Default for Kubernetes {
    fn default() -> Self {
        Kubernetes {
            zones: Vec::new(),
            pods: PodsMode::Disabled,
            fallthrough: None,
            ttl: 5,
            endpoint_pod_names: false,
            namespaces: Vec::new(),
            noendpoints: false,
            ignore_empty_service: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodsMode {
    #[default]
    Disabled,
    Insecure,
    Verified,
}

/// `forward FROM TO... { ... }`.
///
/// `expire`, `health_check` and `max_fails` are validated and dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// A zone, lower case with a trailing dot.
    pub from: String,
    /// 1..=15 upstreams, in file order.
    pub to: Vec<Upstream>,
    pub max_concurrent: Option<u32>,
    pub policy: ForwardPolicy,
    pub force_tcp: bool,
    pub prefer_udp: bool,
    /// Zones not forwarded, lower case with a trailing dot.
    pub except: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `IP`, `IP:PORT` or `dns://IP[:PORT]`; port 53 when none is given.
    Addr(SocketAddr),
    /// A resolv.conf-style file whose `nameserver` lines are the upstreams.
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardPolicy {
    #[default]
    Random,
    RoundRobin,
    Sequential,
}

/// `cache [TTL] [ZONES...] { ... }`.
///
/// `success CAPACITY [TTL [MINTTL]]` sets `max_ttl` and `min_ttl`; the TTLs of `denial` are
/// validated and dropped; `prefetch` and `serve_stale` are accepted and ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Cache {
    /// Seconds, default 3600.
    pub max_ttl: u32,
    /// The server block's zones when none are given.
    pub zones: Vec<String>,
    /// Default 9984.
    pub success_capacity: usize,
    /// Default 9984.
    pub denial_capacity: usize,
    /// Seconds, default 5.
    pub min_ttl: u32,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            max_ttl: 3600,
            zones: Vec::new(),
            success_capacity: 9984,
            denial_capacity: 9984,
            min_ttl: 5,
        }
    }
}

/// `hosts [FILE [ZONES...]] { IP NAME...; ttl N; no_reverse; reload DUR; fallthrough }`.
///
/// As in CoreDNS the first argument is always the file. Unlike CoreDNS, no file given means
/// no file (CoreDNS reads `/etc/hosts`). `reload` is validated and dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Hosts {
    pub file: Option<PathBuf>,
    /// The server block's zones when none are given.
    pub zones: Vec<String>,
    /// Inline entries in file order; names lower case with a trailing dot.
    pub entries: Vec<(IpAddr, Vec<String>)>,
    /// 1..=65535, default 3600.
    pub ttl: u32,
    pub no_reverse: bool,
    /// `Some(empty)` falls through for every zone.
    pub fallthrough: Option<Vec<String>>,
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts {
            file: None,
            zones: Vec::new(),
            entries: Vec::new(),
            ttl: 3600,
            no_reverse: false,
            fallthrough: None,
        }
    }
}

/// `rewrite [continue|stop] name [MATCH] FROM TO [answer auto | answer name FROM TO]`.
///
/// `from` and `to` are lower case; for `exact` and `suffix` they also end with a dot; for
/// `regex` they are kept as written. `answer name FROM TO` is validated and recorded as
/// `answer_auto` (the engine reverses the rule itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    /// `continue` rather than `stop` (the default).
    pub continue_: bool,
    pub match_type: NameMatch,
    pub from: String,
    pub to: String,
    pub answer_auto: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameMatch {
    #[default]
    Exact,
    Prefix,
    Suffix,
    Substring,
    Regex,
}

/// Parses the text of a Corefile.
pub fn parse(text: &str) -> Result<Corefile> {
    let tokens = lex(text)?;
    let raw = parse_raw(&tokens)?;
    if raw.is_empty() {
        return Err(CorefileError::new(1, "no server blocks"));
    }
    // (zone, port) -> line of the key that first served it.
    let mut served: HashMap<(String, u16), usize> = HashMap::new();
    let mut servers = Vec::with_capacity(raw.len());
    for block in raw {
        let mut zones = Vec::new();
        let mut port = None;
        for key in &block.keys {
            let (zone, key_port) = server_key(key)?;
            match port {
                None => port = Some(key_port),
                Some(p) if p != key_port => {
                    return Err(CorefileError::new(
                        key.line,
                        format!(
                            "server block mixes ports {p} and {key_port}; write one block per port"
                        ),
                    ))
                }
                Some(_) => {}
            }
            if let Some(first) = served.get(&(zone.clone(), key_port)) {
                return Err(CorefileError::new(
                    key.line,
                    format!("zone {zone} port {key_port} is already served (line {first})"),
                ));
            }
            served.insert((zone.clone(), key_port), key.line);
            zones.push(zone);
        }
        let port = port.unwrap_or(DEFAULT_PORT);
        let plugins = server_plugins(&block.body, &zones)?;
        servers.push(ServerBlock {
            zones,
            port,
            plugins,
        });
    }
    Ok(Corefile { servers })
}

// ---------------------------------------------------------------------------------------------
// Syntax: text -> tokens -> server blocks of directives.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Splits on whitespace; `#` outside quotes comments out the rest of the line; `"..."` is one
/// word (spanning lines if need be, `\"` and `\\` escaped); a bare `{` or `}` is a brace.
fn lex(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                tokens.push(Token {
                    tok: Tok::Newline,
                    line,
                });
                line += 1;
            }
            c if c.is_whitespace() => {}
            '#' => while chars.next_if(|&c| c != '\n').is_some() {},
            '"' => {
                let start = line;
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(CorefileError::new(start, "unterminated quoted string"))
                        }
                        Some('"') => break,
                        Some('\\') => match chars.next_if(|&c| c == '"' || c == '\\') {
                            Some(escaped) => word.push(escaped),
                            None => word.push('\\'),
                        },
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            word.push(c);
                        }
                    }
                }
                check_env(&word, start)?;
                tokens.push(Token {
                    tok: Tok::Word(word),
                    line: start,
                });
            }
            c => {
                let mut word = String::from(c);
                while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '#') {
                    word.push(c);
                }
                let tok = match word.as_str() {
                    "{" => Tok::Open,
                    "}" => Tok::Close,
                    _ => {
                        check_env(&word, line)?;
                        Tok::Word(word)
                    }
                };
                tokens.push(Token { tok, line });
            }
        }
    }
    Ok(tokens)
}

fn check_env(word: &str, line: usize) -> Result<()> {
    if let Some(start) = word.find("{$") {
        let var = match word[start..].find('}') {
            Some(end) => &word[start..start + end + 1],
            None => &word[start..],
        };
        return Err(CorefileError::new(
            line,
            format!("environment variables are not supported: {var}"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
struct Word {
    text: String,
    line: usize,
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// A line: a name, its arguments, maybe a `{ ... }` block of further lines.
#[derive(Debug, Clone, PartialEq)]
struct Directive {
    name: Word,
    args: Vec<Word>,
    block: Option<Vec<Directive>>,
}

#[derive(Debug, Clone, PartialEq)]
struct RawServer {
    keys: Vec<Word>,
    body: Vec<Directive>,
}

struct Cursor<'a> {
    tokens: &'a [Token],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&'a Token> {
        let t = self.tokens.get(self.pos);
        self.pos += 1;
        t
    }

    fn skip_newlines(&mut self) {
        while matches!(
            self.peek(),
            Some(Token {
                tok: Tok::Newline,
                ..
            })
        ) {
            self.pos += 1;
        }
    }

    fn last_line(&self) -> usize {
        self.tokens.last().map_or(1, |t| t.line)
    }
}

fn parse_raw(tokens: &[Token]) -> Result<Vec<RawServer>> {
    let mut cur = Cursor { tokens, pos: 0 };
    let mut servers = Vec::new();
    loop {
        cur.skip_newlines();
        let Some(first) = cur.next() else {
            return Ok(servers);
        };
        let mut keys: Vec<Word> = Vec::new();
        let mut token = first;
        // Keys up to `{`; a key ending in a comma continues on the next line.
        let open_line = loop {
            match &token.tok {
                Tok::Word(w) => {
                    if w == "import" {
                        return Err(CorefileError::new(token.line, "import is not supported"));
                    }
                    if w.starts_with('(') && w.ends_with(')') {
                        return Err(CorefileError::new(
                            token.line,
                            format!("snippets are not supported: {w}"),
                        ));
                    }
                    keys.extend(w.split(',').filter(|k| !k.is_empty()).map(|k| Word {
                        text: k.to_string(),
                        line: token.line,
                    }));
                }
                Tok::Open if keys.is_empty() => {
                    return Err(CorefileError::new(
                        token.line,
                        "'{' without server block zones",
                    ))
                }
                Tok::Open => break token.line,
                Tok::Close => return Err(CorefileError::new(token.line, "unexpected '}'")),
                Tok::Newline => {
                    let continued = cur.pos >= 2
                        && matches!(
                            cur.tokens.get(cur.pos - 2),
                            Some(Token { tok: Tok::Word(w), .. }) if w.ends_with(',')
                        );
                    if !continued {
                        return Err(CorefileError::new(
                            token.line,
                            "expected '{' after server block zones",
                        ));
                    }
                }
            }
            token = match cur.next() {
                Some(t) => t,
                None => {
                    return Err(CorefileError::new(
                        cur.last_line(),
                        "expected '{' after server block zones",
                    ))
                }
            };
        };
        let body = parse_block(&mut cur, open_line)?;
        after_close(&mut cur)?;
        servers.push(RawServer { keys, body });
    }
}

/// Directives up to the `}` matching the `{` on `open_line`, which is consumed.
fn parse_block(cur: &mut Cursor<'_>, open_line: usize) -> Result<Vec<Directive>> {
    let mut directives = Vec::new();
    loop {
        cur.skip_newlines();
        let Some(token) = cur.next() else {
            return Err(CorefileError::new(open_line, "unterminated block"));
        };
        let name = match &token.tok {
            Tok::Close => return Ok(directives),
            Tok::Open => return Err(CorefileError::new(token.line, "unexpected '{'")),
            Tok::Newline => continue,
            Tok::Word(w) => Word {
                text: w.clone(),
                line: token.line,
            },
        };
        if name.text == "import" {
            return Err(CorefileError::new(name.line, "import is not supported"));
        }
        let mut args = Vec::new();
        let mut block = None;
        while let Some(token) = cur.peek() {
            match &token.tok {
                Tok::Word(w) => {
                    args.push(Word {
                        text: w.clone(),
                        line: token.line,
                    });
                    cur.pos += 1;
                }
                Tok::Newline => {
                    cur.pos += 1;
                    break;
                }
                // Closes the enclosing block: left for the loop above.
                Tok::Close => break,
                Tok::Open => {
                    cur.pos += 1;
                    block = Some(parse_block(cur, token.line)?);
                    after_close(cur)?;
                    break;
                }
            }
        }
        directives.push(Directive { name, args, block });
    }
}

/// After a `}` only a newline, the end, or another `}` may follow on the same line.
fn after_close(cur: &mut Cursor<'_>) -> Result<()> {
    match cur.peek() {
        None
        | Some(Token {
            tok: Tok::Close, ..
        }) => Ok(()),
        Some(Token {
            tok: Tok::Newline, ..
        }) => {
            cur.pos += 1;
            Ok(())
        }
        Some(Token {
            tok: Tok::Word(w),
            line,
        }) => Err(CorefileError::new(
            *line,
            format!("unexpected {w:?} after '}}'"),
        )),
        Some(Token {
            tok: Tok::Open,
            line,
        }) => Err(CorefileError::new(*line, "unexpected '{' after '}'")),
    }
}

// ---------------------------------------------------------------------------------------------
// Names, addresses, durations.

/// `[dns://]ZONE[:PORT]` -> (fqdn zone, port).
fn server_key(key: &Word) -> Result<(String, u16)> {
    let err = |msg: String| CorefileError::new(key.line, msg);
    let mut text = key.text.as_str();
    if let Some((scheme, rest)) = text.split_once("://") {
        if !scheme.eq_ignore_ascii_case("dns") {
            return Err(err(format!(
                "server block {key}: transport {scheme}:// is not supported"
            )));
        }
        text = rest;
    }
    let (zone, port) = match text.rsplit_once(':') {
        Some((zone, port)) => {
            let port = match port.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(err(format!("server block {key}: invalid port {port:?}"))),
            };
            (zone, port)
        }
        None => (text, DEFAULT_PORT),
    };
    let zone = if zone.is_empty() { "." } else { zone };
    if zone.contains('/') {
        return Err(err(format!(
            "server block {key}: cidr zones are not supported"
        )));
    }
    let zone = fqdn(zone).map_err(|e| err(format!("server block {key}: {e}")))?;
    Ok((zone, port))
}

/// Lower case with a trailing dot; `"."` stays the root.
fn fqdn(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if lower == "." {
        return Ok(lower);
    }
    let bare = lower.strip_suffix('.').unwrap_or(&lower);
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
    };
    if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(valid_label) {
        return Err(format!("invalid name {name:?}"));
    }
    Ok(format!("{bare}."))
}

/// For lookups only: lower case with a trailing dot, no validation.
fn fqdn_lossy(name: &str) -> String {
    let mut lower = name.to_ascii_lowercase();
    if !lower.ends_with('.') {
        lower.push('.');
    }
    lower
}

/// Whether fqdn `name` is `zone` or below it.
fn in_zone(name: &str, zone: &str) -> bool {
    zone == "."
        || name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}

/// `:PORT` (all addresses), `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
fn listen_addr(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    match host {
        "" => Some(any_addr(port)),
        "localhost" => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        _ => None,
    }
}

/// Go's `time.ParseDuration` without signs: `300ms`, `1.5s`, `1h30m`, `0`.
fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => {
                let n = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = after
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        let (unit, after) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        total = total.checked_add(int.checked_mul(nanos_per)?)?;
        if !frac.is_empty() {
            // At most 18 fractional digits matter at nanosecond resolution of an hour.
            let frac = &frac[..frac.len().min(18)];
            let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
            let frac: u128 = frac.parse().ok()?;
            total = total.checked_add(frac * nanos_per / scale)?;
        }
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    let nanos = u32::try_from(total % 1_000_000_000).ok()?;
    Some(Duration::new(secs, nanos))
}

// ---------------------------------------------------------------------------------------------
// Plugins.

/// Plugins CoreDNS allows once per server block.
const ONCE: &[&str] = &[
    "kubernetes",
    "forward",
    "cache",
    "health",
    "ready",
    "prometheus",
    "reload",
];

fn server_plugins(body: &[Directive], zones: &[String]) -> Result<Vec<Plugin>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut plugins = Vec::with_capacity(body.len());
    for d in body {
        let plugin = parse_plugin(d, zones)?;
        let name = plugin.name();
        if ONCE.contains(&name) {
            if let Some(first) = seen.get(name) {
                return Err(CorefileError::new(
                    d.name.line,
                    format!("plugin {name:?} is defined twice (first on line {first})"),
                ));
            }
            seen.insert(name, d.name.line);
        }
        plugins.push(plugin);
    }
    Ok(plugins)
}

fn parse_plugin(d: &Directive, zones: &[String]) -> Result<Plugin> {
    let plugin = match d.name.text.as_str() {
        // Options of errors and log (formats, classes, `consolidate`) change only logging.
        "errors" => Plugin::Errors,
        "log" => Plugin::Log,
        "health" => Plugin::Health(health(d)?),
        "ready" => Plugin::Ready(addr_plugin(d, 8181)?),
        "prometheus" => Plugin::Prometheus(addr_plugin(d, 9153)?),
        "kubernetes" => Plugin::Kubernetes(kubernetes(d, zones)?),
        "forward" => Plugin::Forward(forward(d)?),
        "cache" => Plugin::Cache(cache(d, zones)?),
        "hosts" => Plugin::Hosts(hosts(d, zones)?),
        "rewrite" => Plugin::Rewrite(rewrite(d)?),
        "reload" => Plugin::Reload(reload(d)?),
        "loadbalance" => {
            no_block(d)?;
            if let Some(policy) = d.args.first() {
                if policy.text != "round_robin" {
                    return Err(bad(d, policy, format!("unsupported policy {policy}")));
                }
            }
            max_args(d, 1)?;
            Plugin::LoadBalance
        }
        "loop" | "whoami" | "debug" => {
            no_block(d)?;
            max_args(d, 0)?;
            match d.name.text.as_str() {
                "loop" => Plugin::Loop,
                "whoami" => Plugin::Whoami,
                _ => Plugin::Debug,
            }
        }
        _ => {
            return Err(CorefileError::new(
                d.name.line,
                format!("unknown plugin {}", d.name),
            ))
        }
    };
    Ok(plugin)
}

/// Error at `word` prefixed with the plugin name.
fn bad(d: &Directive, word: &Word, msg: impl fmt::Display) -> CorefileError {
    CorefileError::new(word.line, format!("{}: {msg}", d.name.text))
}

fn no_block(d: &Directive) -> Result<()> {
    match d.block {
        Some(_) => Err(bad(d, &d.name, "takes no block")),
        None => Ok(()),
    }
}

fn max_args(d: &Directive, n: usize) -> Result<()> {
    match d.args.get(n) {
        Some(extra) => Err(bad(d, extra, format!("unexpected argument {extra}"))),
        None => Ok(()),
    }
}

/// The lines of a plugin's block (none without a block).
fn options(d: &Directive) -> impl Iterator<Item = &Directive> {
    d.block.iter().flatten()
}

/// Exactly one argument of option `o` of plugin `d`.
fn one_arg<'a>(d: &Directive, o: &'a Directive) -> Result<&'a Word> {
    match o.args.as_slice() {
        [arg] => Ok(arg),
        [] => Err(bad(d, &o.name, format!("{} needs a value", o.name.text))),
        [_, extra, ..] => Err(bad(
            d,
            extra,
            format!("{}: unexpected argument {extra}", o.name.text),
        )),
    }
}

fn no_args(d: &Directive, o: &Directive) -> Result<()> {
    match o.args.first() {
        Some(extra) => Err(bad(
            d,
            extra,
            format!("{}: unexpected argument {extra}", o.name.text),
        )),
        None => Ok(()),
    }
}

fn no_sub_block(d: &Directive, o: &Directive) -> Result<()> {
    match o.block {
        Some(_) => Err(bad(d, &o.name, format!("{} takes no block", o.name.text))),
        None => Ok(()),
    }
}

fn unsupported(d: &Directive, o: &Directive) -> CorefileError {
    bad(d, &o.name, format!("unsupported option {}", o.name))
}

fn number<T: std::str::FromStr>(d: &Directive, what: &str, w: &Word) -> Result<T> {
    w.text
        .parse()
        .map_err(|_| bad(d, w, format!("invalid {what} {w}")))
}

/// A `ttl` value within `range`.
fn ttl_in(d: &Directive, w: &Word, range: std::ops::RangeInclusive<u32>) -> Result<u32> {
    let ttl: u32 = number(d, "ttl", w)?;
    if !range.contains(&ttl) {
        return Err(bad(
            d,
            w,
            format!(
                "ttl must be between {} and {}, got {ttl}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(ttl)
}

fn duration(d: &Directive, what: &str, w: &Word) -> Result<Duration> {
    parse_duration(&w.text).ok_or_else(|| bad(d, w, format!("invalid {what} {w}")))
}

fn zone_arg(d: &Directive, w: &Word) -> Result<String> {
    fqdn(&w.text).map_err(|e| bad(d, w, e))
}

fn zone_args(d: &Directive, words: &[Word]) -> Result<Vec<String>> {
    words.iter().map(|w| zone_arg(d, w)).collect()
}

/// `[ZONES...]` defaulting to the server block's zones.
fn zones_or(d: &Directive, words: &[Word], server: &[String]) -> Result<Vec<String>> {
    if words.is_empty() {
        Ok(server.to_vec())
    } else {
        zone_args(d, words)
    }
}

fn health(d: &Directive) -> Result<Health> {
    max_args(d, 1)?;
    let mut h = Health::default();
    if let Some(a) = d.args.first() {
        h.addr = listen_addr(&a.text).ok_or_else(|| bad(d, a, format!("invalid address {a}")))?;
    }
    for o in options(d) {
        no_sub_block(d, o)?;
        match o.name.text.as_str() {
            "lameduck" => h.lameduck = duration(d, "lameduck duration", one_arg(d, o)?)?,
            _ => return Err(unsupported(d, o)),
        }
    }
    Ok(h)
}

/// `ready [ADDR]` and `prometheus [ADDR]`.
fn addr_plugin(d: &Directive, default_port: u16) -> Result<SocketAddr> {
    no_block(d)?;
    max_args(d, 1)?;
    match d.args.first() {
        None => Ok(any_addr(default_port)),
        Some(a) => listen_addr(&a.text).ok_or_else(|| bad(d, a, format!("invalid address {a}"))),
    }
}

fn reload(d: &Directive) -> Result<Duration> {
    no_block(d)?;
    max_args(d, 2)?;
    let mut interval = Duration::from_secs(30);
    if let Some(a) = d.args.first() {
        interval = duration(d, "interval", a)?;
        if interval < Duration::from_secs(2) {
            return Err(bad(
                d,
                a,
                format!("interval must be at least 2s, got {}", a.text),
            ));
        }
    }
    if let Some(a) = d.args.get(1) {
        if duration(d, "jitter", a)? < Duration::from_secs(1) {
            return Err(bad(
                d,
                a,
                format!("jitter must be at least 1s, got {}", a.text),
            ));
        }
    }
    Ok(interval)
}

fn kubernetes(d: &Directive, server: &[String]) -> Result<Kubernetes> {
    let mut k = Kubernetes {
        zones: zones_or(d, &d.args, server)?,
        ..Kubernetes::default()
    };
    for o in options(d) {
        no_sub_block(d, o)?;
        match o.name.text.as_str() {
            "pods" => {
                let mode = one_arg(d, o)?;
                k.pods = match mode.text.as_str() {
                    "disabled" => PodsMode::Disabled,
                    "insecure" => PodsMode::Insecure,
                    "verified" => PodsMode::Verified,
                    _ => return Err(bad(d, mode, format!("invalid pods mode {mode}"))),
                };
            }
            "fallthrough" => k.fallthrough = Some(zone_args(d, &o.args)?),
            "ttl" => {
                k.ttl = ttl_in(d, one_arg(d, o)?, 0..=3600)?;
            }
            "endpoint_pod_names" => {
                no_args(d, o)?;
                k.endpoint_pod_names = true;
            }
            "noendpoints" => {
                no_args(d, o)?;
                k.noendpoints = true;
            }
            "namespaces" => {
                if o.args.is_empty() {
                    return Err(bad(d, &o.name, "namespaces needs at least one namespace"));
                }
                for ns in &o.args {
                    let valid = !ns.text.is_empty()
                        && ns.text.len() <= 63
                        && ns
                            .text
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    if !valid {
                        return Err(bad(d, ns, format!("invalid namespace {ns}")));
                    }
                    k.namespaces.push(ns.text.clone());
                }
            }
            "ignore" => {
                let what = one_arg(d, o)?;
                if what.text != "empty_service" {
                    return Err(bad(
                        d,
                        what,
                        format!("unsupported option \"ignore {}\"", what.text),
                    ));
                }
                k.ignore_empty_service = true;
            }
            _ => return Err(unsupported(d, o)),
        }
    }
    Ok(k)
}

fn forward(d: &Directive) -> Result<Forward> {
    let Some((from, to)) = d.args.split_first() else {
        return Err(bad(d, &d.name, "expected FROM and at least one upstream"));
    };
    if to.is_empty() {
        return Err(bad(d, from, "expected at least one upstream after FROM"));
    }
    if to.len() > MAX_UPSTREAMS {
        return Err(bad(
            d,
            &to[MAX_UPSTREAMS],
            format!("at most {MAX_UPSTREAMS} upstreams, got {}", to.len()),
        ));
    }
    let mut f = Forward {
        from: zone_arg(d, from)?,
        to: to.iter().map(|w| upstream(d, w)).collect::<Result<_>>()?,
        max_concurrent: None,
        policy: ForwardPolicy::Random,
        force_tcp: false,
        prefer_udp: false,
        except: Vec::new(),
    };
    for o in options(d) {
        no_sub_block(d, o)?;
        match o.name.text.as_str() {
            "max_concurrent" => {
                f.max_concurrent = Some(number(d, "max_concurrent", one_arg(d, o)?)?);
            }
            "policy" => {
                let p = one_arg(d, o)?;
                f.policy = match p.text.as_str() {
                    "random" => ForwardPolicy::Random,
                    "round_robin" => ForwardPolicy::RoundRobin,
                    "sequential" => ForwardPolicy::Sequential,
                    _ => return Err(bad(d, p, format!("unknown policy {p}"))),
                };
            }
            "force_tcp" => {
                no_args(d, o)?;
                f.force_tcp = true;
            }
            "prefer_udp" => {
                no_args(d, o)?;
                f.prefer_udp = true;
            }
            "expire" => {
                duration(d, "expire duration", one_arg(d, o)?)?;
            }
            "health_check" => {
                let Some((dur, rest)) = o.args.split_first() else {
                    return Err(bad(d, &o.name, "health_check needs a value"));
                };
                duration(d, "health_check duration", dur)?;
                let mut rest = rest.iter();
                while let Some(opt) = rest.next() {
                    match opt.text.as_str() {
                        "no_rec" => {}
                        "domain" => match rest.next() {
                            Some(name) => {
                                zone_arg(d, name)?;
                            }
                            None => return Err(bad(d, opt, "health_check: domain needs a name")),
                        },
                        _ => {
                            return Err(bad(d, opt, format!("health_check: unknown option {opt}")))
                        }
                    }
                }
            }
            "except" => {
                if o.args.is_empty() {
                    return Err(bad(d, &o.name, "except needs at least one zone"));
                }
                f.except.extend(zone_args(d, &o.args)?);
            }
            "max_fails" => {
                number::<u32>(d, "max_fails", one_arg(d, o)?)?;
            }
            _ => return Err(unsupported(d, o)),
        }
    }
    if f.force_tcp && f.prefer_udp {
        return Err(bad(
            d,
            &d.name,
            "force_tcp and prefer_udp are mutually exclusive",
        ));
    }
    Ok(f)
}

/// `IP`, `IP:PORT`, `[IPv6]:PORT`, `dns://` any of those, or a file path.
fn upstream(d: &Directive, w: &Word) -> Result<Upstream> {
    let mut text = w.text.as_str();
    if let Some((scheme, rest)) = text.split_once("://") {
        if scheme.eq_ignore_ascii_case("tls") {
            return Err(bad(d, w, format!("tls upstreams are not supported: {w}")));
        }
        if !scheme.eq_ignore_ascii_case("dns") {
            return Err(bad(
                d,
                w,
                format!("unsupported transport {scheme}:// in {w}"),
            ));
        }
        text = rest;
    } else if text.contains('/') {
        return Ok(Upstream::File(PathBuf::from(text)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Upstream::Addr(addr));
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(Upstream::Addr(SocketAddr::new(ip, DEFAULT_PORT))),
        Err(_) => Err(bad(
            d,
            w,
            format!("invalid upstream {w}: expected an IP address, IP:PORT or a file path"),
        )),
    }
}

fn cache(d: &Directive, server: &[String]) -> Result<Cache> {
    let mut c = Cache::default();
    let mut args = d.args.as_slice();
    if let Some((first, rest)) = args.split_first() {
        if let Ok(ttl) = first.text.parse::<u32>() {
            if ttl == 0 {
                return Err(bad(d, first, "ttl must be positive"));
            }
            c.max_ttl = ttl;
            args = rest;
        } else if first.text.starts_with(|c: char| c.is_ascii_digit())
            && parse_duration(&first.text).is_some()
        {
            return Err(bad(
                d,
                first,
                format!("ttl is a number of seconds, got {first}"),
            ));
        }
    }
    c.zones = zones_or(d, args, server)?;
    for o in options(d) {
        no_sub_block(d, o)?;
        match o.name.text.as_str() {
            kind @ ("success" | "denial") => {
                let Some((cap, ttls)) = o.args.split_first() else {
                    return Err(bad(d, &o.name, format!("{kind} needs a capacity")));
                };
                let cap: usize = number(d, "capacity", cap)?;
                let ttl = match ttls.first() {
                    Some(w) => match number::<u32>(d, "ttl", w)? {
                        0 => return Err(bad(d, w, "ttl must be positive")),
                        ttl => Some(ttl),
                    },
                    None => None,
                };
                let min_ttl = match ttls.get(1) {
                    Some(w) => Some(number::<u32>(d, "minimum ttl", w)?),
                    None => None,
                };
                if let Some(extra) = ttls.get(2) {
                    return Err(bad(
                        d,
                        extra,
                        format!("{kind}: unexpected argument {extra}"),
                    ));
                }
                if kind == "success" {
                    c.success_capacity = cap;
                    c.max_ttl = ttl.unwrap_or(c.max_ttl);
                    c.min_ttl = min_ttl.unwrap_or(c.min_ttl);
                } else {
                    c.denial_capacity = cap;
                }
            }
            "prefetch" | "serve_stale" => {}
            _ => return Err(unsupported(d, o)),
        }
    }
    Ok(c)
}

fn hosts(d: &Directive, server: &[String]) -> Result<Hosts> {
    let mut h = Hosts::default();
    if let Some((file, zones)) = d.args.split_first() {
        h.file = Some(PathBuf::from(&file.text));
        h.zones = zones_or(d, zones, server)?;
    } else {
        h.zones = server.to_vec();
    }
    for o in options(d) {
        no_sub_block(d, o)?;
        match o.name.text.as_str() {
            "ttl" => {
                h.ttl = ttl_in(d, one_arg(d, o)?, 1..=65535)?;
            }
            "no_reverse" => {
                no_args(d, o)?;
                h.no_reverse = true;
            }
            "reload" => {
                duration(d, "reload duration", one_arg(d, o)?)?;
            }
            "fallthrough" => h.fallthrough = Some(zone_args(d, &o.args)?),
            text => {
                let looks_like_ip =
                    text.contains(':') || text.starts_with(|c: char| c.is_ascii_digit());
                let ip: IpAddr = match text.parse() {
                    Ok(ip) => ip,
                    Err(_) if looks_like_ip => {
                        return Err(bad(d, &o.name, format!("invalid IP address {}", o.name)))
                    }
                    Err(_) => return Err(unsupported(d, o)),
                };
                if o.args.is_empty() {
                    return Err(bad(d, &o.name, format!("entry {} has no names", o.name)));
                }
                h.entries.push((ip, zone_args(d, &o.args)?));
            }
        }
    }
    Ok(h)
}

fn rewrite(d: &Directive) -> Result<Rewrite> {
    no_block(d)?;
    let mut args = d.args.iter().peekable();
    let mut continue_ = false;
    if let Some(w) = args.next_if(|w| w.text == "continue" || w.text == "stop") {
        continue_ = w.text == "continue";
    }
    match args.next() {
        Some(w) if w.text == "name" => {}
        Some(w) => {
            return Err(bad(
                d,
                w,
                format!("unsupported rule {w}; only name is supported"),
            ))
        }
        None => return Err(bad(d, &d.name, "expected name FROM TO")),
    }
    let rest: Vec<&Word> = args.collect();
    let (match_type, rest) = match rest.split_first() {
        Some((w, after)) if after.len() >= 2 => match w.text.as_str() {
            "exact" => (NameMatch::Exact, after),
            "prefix" => (NameMatch::Prefix, after),
            "suffix" => (NameMatch::Suffix, after),
            "substring" => (NameMatch::Substring, after),
            "regex" => (NameMatch::Regex, after),
            _ => (NameMatch::Exact, rest.as_slice()),
        },
        _ => (NameMatch::Exact, rest.as_slice()),
    };
    let [from, to, answer @ ..] = rest else {
        let at = rest.last().copied().unwrap_or(&d.name);
        return Err(bad(d, at, "expected name [MATCH] FROM TO"));
    };
    let normalise = |w: &Word| -> Result<String> {
        match match_type {
            NameMatch::Exact => fqdn(&w.text).map_err(|e| bad(d, w, e)),
            NameMatch::Suffix => Ok(fqdn_lossy(&w.text)),
            NameMatch::Prefix | NameMatch::Substring => Ok(w.text.to_ascii_lowercase()),
            NameMatch::Regex => Ok(w.text.clone()),
        }
    };
    let answer_auto = match answer {
        [] => false,
        [a, auto] if a.text == "answer" && auto.text == "auto" => true,
        [a, name, from, to] if a.text == "answer" && name.text == "name" => {
            if match_type != NameMatch::Regex {
                normalise(from)?;
                normalise(to)?;
            }
            true
        }
        [a, kind, ..] if a.text == "answer" => {
            return Err(bad(d, kind, format!("unsupported answer rewrite {kind}")))
        }
        [extra, ..] => return Err(bad(d, extra, format!("unexpected argument {extra}"))),
    };
    Ok(Rewrite {
        continue_,
        match_type,
        from: normalise(from)?,
        to: normalise(to)?,
        answer_auto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single place tests call the parser: `expect` is the model or the error text.
    fn check(input: &str, expect: Result<Corefile, &str>) {
        let got = parse(input).map_err(|e| e.to_string());
        let expect = expect.map_err(str::to_string);
        assert_eq!(got, expect, "input:\n{input}");
    }

    /// One `.:53` server block holding `plugins`.
    /// `. { LINE }` parses to the one plugin.
    fn check_plugin(line: &str, expect: Plugin) {
        check(&format!(". {{\n{line}\n}}"), Ok(root(vec![expect])));
    }

    fn root(plugins: Vec<Plugin>) -> Corefile {
        Corefile {
            servers: vec![ServerBlock {
                zones: vec![".".into()],
                port: 53,
                plugins,
            }],
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address is valid")
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn kubeadm_kubernetes() -> Kubernetes {
        Kubernetes {
            zones: names(&["cluster.local.", "in-addr.arpa.", "ip6.arpa."]),
            pods: PodsMode::Insecure,
            fallthrough: Some(names(&["in-addr.arpa.", "ip6.arpa."])),
            ttl: 30,
            ..Kubernetes::default()
        }
    }

    fn kubeadm_plugins() -> Vec<Plugin> {
        vec![
            Plugin::Errors,
            Plugin::Health(Health {
                addr: addr("0.0.0.0:8080"),
                lameduck: Duration::from_secs(5),
            }),
            Plugin::Ready(addr("0.0.0.0:8181")),
            Plugin::Kubernetes(kubeadm_kubernetes()),
            Plugin::Prometheus(addr("0.0.0.0:9153")),
            Plugin::Forward(Forward {
                from: ".".into(),
                to: vec![Upstream::File("/etc/resolv.conf".into())],
                max_concurrent: Some(1000),
                policy: ForwardPolicy::Random,
                force_tcp: false,
                prefer_udp: false,
                except: vec![],
            }),
            Plugin::Cache(Cache {
                max_ttl: 30,
                zones: names(&["."]),
                ..Cache::default()
            }),
            Plugin::Loop,
            Plugin::Reload(Duration::from_secs(30)),
            Plugin::LoadBalance,
        ]
    }

    fn forward_to(to: Vec<Upstream>) -> Forward {
        Forward {
            from: ".".into(),
            to,
            max_concurrent: None,
            policy: ForwardPolicy::Random,
            force_tcp: false,
            prefer_udp: false,
            except: vec![],
        }
    }

    fn ip(s: &str) -> Upstream {
        Upstream::Addr(addr(s))
    }

    #[test]
    fn kubeadm_default() {
        check(KUBEADM_DEFAULT, Ok(root(kubeadm_plugins())));
    }

    #[test]
    fn k3s_default() {
        let k3s = r#".:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    hosts /etc/coredns/NodeHosts {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import /etc/coredns/custom/*.override
}
import /etc/coredns/custom/*.server
"#;
        // k3s imports its custom snippets; without the imports it parses.
        check(k3s, Err("line 20: import is not supported"));
        let without_imports: String = k3s
            .lines()
            .filter(|l| !l.contains("import"))
            .map(|l| format!("{l}\n"))
            .collect();
        check(
            &without_imports,
            Ok(root(vec![
                Plugin::Errors,
                Plugin::Health(Health::default()),
                Plugin::Ready(addr("0.0.0.0:8181")),
                Plugin::Kubernetes(Kubernetes {
                    ttl: 5,
                    ..kubeadm_kubernetes()
                }),
                Plugin::Hosts(Hosts {
                    file: Some("/etc/coredns/NodeHosts".into()),
                    zones: names(&["."]),
                    ttl: 60,
                    fallthrough: Some(vec![]),
                    ..Hosts::default()
                }),
                Plugin::Prometheus(addr("0.0.0.0:9153")),
                Plugin::Forward(forward_to(vec![Upstream::File("/etc/resolv.conf".into())])),
                Plugin::Cache(Cache {
                    max_ttl: 30,
                    zones: names(&["."]),
                    ..Cache::default()
                }),
                Plugin::Loop,
                Plugin::Reload(Duration::from_secs(30)),
                Plugin::LoadBalance,
            ])),
        );
    }

    #[test]
    fn cka_edits() {
        let edited = "\
.:53 {
    errors
    hosts {
        10.0.0.1 foo.example
        fallthrough
    }
    kubernetes cluster.local
    rewrite name web.example web.default.svc.cluster.local
    forward . 10.53.0.2
    cache 30
}
";
        check(
            edited,
            Ok(root(vec![
                Plugin::Errors,
                Plugin::Hosts(Hosts {
                    zones: names(&["."]),
                    entries: vec![("10.0.0.1".parse().expect("ip"), names(&["foo.example."]))],
                    fallthrough: Some(vec![]),
                    ..Hosts::default()
                }),
                Plugin::Kubernetes(Kubernetes {
                    zones: names(&["cluster.local."]),
                    ..Kubernetes::default()
                }),
                Plugin::Rewrite(Rewrite {
                    continue_: false,
                    match_type: NameMatch::Exact,
                    from: "web.example.".into(),
                    to: "web.default.svc.cluster.local.".into(),
                    answer_auto: false,
                }),
                Plugin::Forward(forward_to(vec![ip("10.53.0.2:53")])),
                Plugin::Cache(Cache {
                    max_ttl: 30,
                    zones: names(&["."]),
                    ..Cache::default()
                }),
            ])),
        );
        // The same hosts block written on one line.
        check(
            ". {\n  hosts { 10.0.0.1 foo.example }\n}",
            Ok(root(vec![Plugin::Hosts(Hosts {
                zones: names(&["."]),
                entries: vec![("10.0.0.1".parse().expect("ip"), names(&["foo.example."]))],
                ..Hosts::default()
            })])),
        );
    }

    #[test]
    fn server_blocks() {
        let block = |zones: &[&str], port| ServerBlock {
            zones: names(zones),
            port,
            plugins: vec![Plugin::Whoami],
        };
        let cases: &[(&str, Vec<ServerBlock>)] = &[
            (". { whoami }", vec![block(&["."], 53)]),
            (".:53 { whoami }", vec![block(&["."], 53)]),
            (":1053 { whoami }", vec![block(&["."], 1053)]),
            ("dns://.:53 { whoami }", vec![block(&["."], 53)]),
            ("Example.ORG { whoami }", vec![block(&["example.org."], 53)]),
            (
                "cluster.local:53 { whoami }",
                vec![block(&["cluster.local."], 53)],
            ),
            (
                "example.org. example.net:53 {\n whoami\n}",
                vec![block(&["example.org.", "example.net."], 53)],
            ),
            (
                "example.org,\nexample.net {\n whoami\n}",
                vec![block(&["example.org.", "example.net."], 53)],
            ),
            (
                "example.org { whoami }\n. { whoami }\n.:5353 { whoami }",
                vec![
                    block(&["example.org."], 53),
                    block(&["."], 53),
                    block(&["."], 5353),
                ],
            ),
            (
                "# comment\n. { # trailing\n  whoami # here too\n}\n# end",
                vec![block(&["."], 53)],
            ),
            ("\".\" { \"whoami\" }", vec![block(&["."], 53)]),
            (". {\r\n  whoami\r\n}\r\n", vec![block(&["."], 53)]),
        ];
        for (input, servers) in cases {
            check(
                input,
                Ok(Corefile {
                    servers: servers.clone(),
                }),
            );
        }
    }

    #[test]
    fn plugins() {
        let cases: Vec<(&str, Plugin)> = vec![
            ("errors", Plugin::Errors),
            (
                "errors {\n consolidate 5m \".* i/o timeout$\"\n }",
                Plugin::Errors,
            ),
            ("log", Plugin::Log),
            ("log . \"{remote} {type}\"", Plugin::Log),
            ("health", Plugin::Health(Health::default())),
            (
                "health 127.0.0.1:8081",
                Plugin::Health(Health {
                    addr: addr("127.0.0.1:8081"),
                    lameduck: Duration::ZERO,
                }),
            ),
            (
                "health localhost:8080 {\n lameduck 500ms\n }",
                Plugin::Health(Health {
                    addr: addr("127.0.0.1:8080"),
                    lameduck: Duration::from_millis(500),
                }),
            ),
            ("ready", Plugin::Ready(addr("0.0.0.0:8181"))),
            ("ready [::1]:8181", Plugin::Ready(addr("[::1]:8181"))),
            ("prometheus", Plugin::Prometheus(addr("0.0.0.0:9153"))),
            (
                "prometheus 0.0.0.0:9153",
                Plugin::Prometheus(addr("0.0.0.0:9153")),
            ),
            ("prometheus :9253", Plugin::Prometheus(addr("0.0.0.0:9253"))),
            ("loop", Plugin::Loop),
            ("reload", Plugin::Reload(Duration::from_secs(30))),
            ("reload 1m", Plugin::Reload(Duration::from_secs(60))),
            ("reload 10s 2s", Plugin::Reload(Duration::from_secs(10))),
            ("loadbalance", Plugin::LoadBalance),
            ("loadbalance round_robin", Plugin::LoadBalance),
            ("whoami", Plugin::Whoami),
            ("debug", Plugin::Debug),
        ];
        for (line, plugin) in cases {
            check_plugin(line, plugin);
        }
    }

    #[test]
    fn kubernetes() {
        let cases: Vec<(&str, Kubernetes)> = vec![
            (
                "kubernetes",
                Kubernetes {
                    zones: names(&["."]),
                    ..Kubernetes::default()
                },
            ),
            (
                "kubernetes Cluster.Local {\n pods verified\n fallthrough\n ttl 0\n }",
                Kubernetes {
                    zones: names(&["cluster.local."]),
                    pods: PodsMode::Verified,
                    fallthrough: Some(vec![]),
                    ttl: 0,
                    ..Kubernetes::default()
                },
            ),
            (
                "kubernetes cluster.local {\n pods disabled\n ttl 3600\n endpoint_pod_names\n namespaces default kube-system\n noendpoints\n ignore empty_service\n }",
                Kubernetes {
                    zones: names(&["cluster.local."]),
                    pods: PodsMode::Disabled,
                    ttl: 3600,
                    endpoint_pod_names: true,
                    namespaces: names(&["default", "kube-system"]),
                    noendpoints: true,
                    ignore_empty_service: true,
                    ..Kubernetes::default()
                },
            ),
        ];
        for (line, expect) in cases {
            check_plugin(line, Plugin::Kubernetes(expect));
        }
    }

    #[test]
    fn forward() {
        let cases: Vec<(&str, Forward)> = vec![
            ("forward . 8.8.8.8", forward_to(vec![ip("8.8.8.8:53")])),
            (
                "forward . 8.8.8.8:5353 dns://1.1.1.1 dns://9.9.9.9:53 2001:db8::1 [2001:db8::2]:5353 [2001:db8::3]",
                forward_to(vec![
                    ip("8.8.8.8:5353"),
                    ip("1.1.1.1:53"),
                    ip("9.9.9.9:53"),
                    ip("[2001:db8::1]:53"),
                    ip("[2001:db8::2]:5353"),
                    ip("[2001:db8::3]:53"),
                ]),
            ),
            (
                "forward . ./resolv.conf",
                forward_to(vec![Upstream::File("./resolv.conf".into())]),
            ),
            (
                "forward Example.ORG 10.0.0.1 {\n max_concurrent 10\n policy sequential\n force_tcp\n expire 10s\n health_check 5s no_rec domain example.org\n except Sub.Example.org other.example.org\n max_fails 3\n }",
                Forward {
                    from: "example.org.".into(),
                    max_concurrent: Some(10),
                    policy: ForwardPolicy::Sequential,
                    force_tcp: true,
                    except: names(&["sub.example.org.", "other.example.org."]),
                    ..forward_to(vec![ip("10.0.0.1:53")])
                },
            ),
            (
                "forward . 10.0.0.1 {\n policy round_robin\n prefer_udp\n }",
                Forward {
                    policy: ForwardPolicy::RoundRobin,
                    prefer_udp: true,
                    ..forward_to(vec![ip("10.0.0.1:53")])
                },
            ),
        ];
        for (line, expect) in cases {
            check_plugin(line, Plugin::Forward(expect));
        }
        let fifteen = vec!["10.0.0.1"; 15].join(" ");
        check_plugin(
            &format!("forward . {fifteen}"),
            Plugin::Forward(forward_to(vec![ip("10.0.0.1:53"); 15])),
        );
    }

    #[test]
    fn cache() {
        let cases: Vec<(&str, Cache)> = vec![
            (
                "cache",
                Cache {
                    zones: names(&["."]),
                    ..Cache::default()
                },
            ),
            (
                "cache 30 Example.org",
                Cache {
                    max_ttl: 30,
                    zones: names(&["example.org."]),
                    ..Cache::default()
                },
            ),
            (
                "cache example.org",
                Cache {
                    zones: names(&["example.org."]),
                    ..Cache::default()
                },
            ),
            (
                "cache 300 {\n success 5000 600 10\n denial 2000 60 1\n prefetch 10 1m 10%\n serve_stale\n }",
                Cache {
                    max_ttl: 600,
                    zones: names(&["."]),
                    success_capacity: 5000,
                    denial_capacity: 2000,
                    min_ttl: 10,
                },
            ),
        ];
        for (line, expect) in cases {
            check_plugin(line, Plugin::Cache(expect));
        }
    }

    #[test]
    fn hosts() {
        let entry = |ip: &str, n: &[&str]| (ip.parse().expect("test ip"), names(n));
        let cases: Vec<(&str, Hosts)> = vec![
            (
                "hosts",
                Hosts {
                    zones: names(&["."]),
                    ..Hosts::default()
                },
            ),
            (
                "hosts /etc/hosts example.org",
                Hosts {
                    file: Some("/etc/hosts".into()),
                    zones: names(&["example.org."]),
                    ..Hosts::default()
                },
            ),
            (
                "hosts {\n 10.0.0.1 Foo.Example bar.example.\n fd00::1 v6.example\n ttl 10\n no_reverse\n reload 0\n fallthrough example.org\n }",
                Hosts {
                    zones: names(&["."]),
                    entries: vec![
                        entry("10.0.0.1", &["foo.example.", "bar.example."]),
                        entry("fd00::1", &["v6.example."]),
                    ],
                    ttl: 10,
                    no_reverse: true,
                    fallthrough: Some(names(&["example.org."])),
                    ..Hosts::default()
                },
            ),
        ];
        for (line, expect) in cases {
            check_plugin(line, Plugin::Hosts(expect));
        }
    }

    #[test]
    fn rewrite() {
        let rule = |continue_, match_type, from: &str, to: &str, answer_auto| {
            Plugin::Rewrite(Rewrite {
                continue_,
                match_type,
                from: from.into(),
                to: to.into(),
                answer_auto,
            })
        };
        use NameMatch::*;
        let cases: Vec<(&str, Plugin)> = vec![
            (
                "rewrite name Web.Example web.default.svc.cluster.local",
                rule(
                    false,
                    Exact,
                    "web.example.",
                    "web.default.svc.cluster.local.",
                    false,
                ),
            ),
            (
                "rewrite stop name exact a.example b.example answer auto",
                rule(false, Exact, "a.example.", "b.example.", true),
            ),
            (
                "rewrite continue name prefix Old new",
                rule(true, Prefix, "old", "new", false),
            ),
            (
                "rewrite name suffix .Example.com .cluster.local",
                rule(false, Suffix, ".example.com.", ".cluster.local.", false),
            ),
            (
                "rewrite name substring svc svc.cluster",
                rule(false, Substring, "svc", "svc.cluster", false),
            ),
            (
                r#"rewrite name regex (.*)\.Example\.org {1}.default.svc.cluster.local answer name (.*)\.default\.svc\.cluster\.local {1}.example.org"#,
                rule(
                    false,
                    Regex,
                    r"(.*)\.Example\.org",
                    "{1}.default.svc.cluster.local",
                    true,
                ),
            ),
            (
                "rewrite name exact.example other.example",
                rule(false, Exact, "exact.example.", "other.example.", false),
            ),
        ];
        for (line, expect) in cases {
            check_plugin(line, expect);
        }
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(Duration::ZERO)),
            ("5s", Some(Duration::from_secs(5))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1m", Some(Duration::from_secs(60))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1h30m", Some(Duration::from_secs(5400))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("250us", Some(Duration::from_micros(250))),
            ("10ns", Some(Duration::from_nanos(10))),
            ("", None),
            ("5", None),
            ("s", None),
            ("5x", None),
            ("-5s", None),
            ("1.s5", None),
        ];
        for (text, expect) in cases {
            assert_eq!(parse_duration(text), *expect, "duration {text:?}");
        }
    }

    #[test]
    fn server_lookup() {
        let corefile =
            parse("cluster.local { whoami }\nexample.org:5353 { whoami }\n. { whoami }\n")
                .expect("valid corefile");
        let cases: &[(&str, u16, Option<&str>)] = &[
            ("web.default.svc.cluster.local", 53, Some("cluster.local.")),
            ("CLUSTER.LOCAL.", 53, Some("cluster.local.")),
            ("notcluster.local", 53, Some(".")),
            ("www.example.org", 53, Some(".")),
            ("www.example.org", 5353, Some("example.org.")),
            ("www.example.com", 5353, None),
        ];
        for (name, port, zone) in cases {
            let got = corefile
                .server_for(name, *port)
                .map(|s| s.zones[0].as_str());
            assert_eq!(got, *zone, "lookup {name}:{port}");
        }
    }

    #[test]
    fn errors() {
        let cases: &[(&str, &str)] = &[
            // Syntax.
            ("", "line 1: no server blocks"),
            ("# only a comment\n", "line 1: no server blocks"),
            (".:53 {\n  errors\n  health {\n    lameduck 5s\n", "line 3: unterminated block"),
            (".:53 {\n  errors\n", "line 1: unterminated block"),
            (". {\n errors\n}\n}", "line 4: unexpected '}'"),
            ("{\n errors\n}", "line 1: '{' without server block zones"),
            (".\nerrors\n", "line 1: expected '{' after server block zones"),
            (".", "line 1: expected '{' after server block zones"),
            (". {\n {\n }\n}", "line 2: unexpected '{'"),
            (". {\n health {\n } ready\n}", "line 3: unexpected \"ready\" after '}'"),
            (". {\n log \"unterminated\n}\n", "line 2: unterminated quoted string"),
            (
                ". {\n forward . {$UPSTREAM}\n}",
                "line 2: environment variables are not supported: {$UPSTREAM}",
            ),
            (". {\n import common\n}", "line 2: import is not supported"),
            ("(common) {\n errors\n}", "line 1: snippets are not supported: (common)"),
            // Server keys.
            (
                "tls://. {\n whoami\n}",
                "line 1: server block \"tls://.\": transport tls:// is not supported",
            ),
            (".:abc {\n}", "line 1: server block \".:abc\": invalid port \"abc\""),
            (".:0 {\n}", "line 1: server block \".:0\": invalid port \"0\""),
            ("a..b {\n}", "line 1: server block \"a..b\": invalid name \"a..b\""),
            (
                "10.0.0.0/8 {\n}",
                "line 1: server block \"10.0.0.0/8\": cidr zones are not supported",
            ),
            (
                "example.org:53 example.net:5353 {\n}",
                "line 1: server block mixes ports 53 and 5353; write one block per port",
            ),
            (
                ". {\n whoami\n}\n\n.:53 {\n whoami\n}",
                "line 5: zone . port 53 is already served (line 1)",
            ),
            (
                "Example.org example.org. {\n}",
                "line 1: zone example.org. port 53 is already served (line 1)",
            ),
            // Plugins.
            (". {\n errors\n foo bar\n}", "line 3: unknown plugin \"foo\""),
            (
                ". {\n cache\n loop\n cache 30\n}",
                "line 4: plugin \"cache\" is defined twice (first on line 2)",
            ),
            (
                ". {\n forward . 1.1.1.1\n forward . 8.8.8.8\n}",
                "line 3: plugin \"forward\" is defined twice (first on line 2)",
            ),
            (
                ". {\n kubernetes\n kubernetes cluster.local\n}",
                "line 3: plugin \"kubernetes\" is defined twice (first on line 2)",
            ),
            (
                ". {\n health\n health :8081\n}",
                "line 3: plugin \"health\" is defined twice (first on line 2)",
            ),
            (
                ". {\n ready\n ready\n}",
                "line 3: plugin \"ready\" is defined twice (first on line 2)",
            ),
            (
                ". {\n prometheus\n prometheus :9154\n}",
                "line 3: plugin \"prometheus\" is defined twice (first on line 2)",
            ),
            (
                ". {\n reload\n reload 1m\n}",
                "line 3: plugin \"reload\" is defined twice (first on line 2)",
            ),
            (". {\n loop now\n}", "line 2: loop: unexpected argument \"now\""),
            (". {\n whoami {\n }\n}", "line 2: whoami: takes no block"),
            (
                ". {\n loadbalance weighted /etc/w\n}",
                "line 2: loadbalance: unsupported policy \"weighted\"",
            ),
            (". {\n health :http\n}", "line 2: health: invalid address \":http\""),
            (
                ". {\n health {\n  lameduck 5\n }\n}",
                "line 3: health: invalid lameduck duration \"5\"",
            ),
            (
                ". {\n health {\n  lameduck\n }\n}",
                "line 3: health: lameduck needs a value",
            ),
            (
                ". {\n health {\n  lameduck 5s 6s\n }\n}",
                "line 3: health: lameduck: unexpected argument \"6s\"",
            ),
            (
                ". {\n health {\n  check 5s\n }\n}",
                "line 3: health: unsupported option \"check\"",
            ),
            (". {\n ready example.org\n}", "line 2: ready: invalid address \"example.org\""),
            (
                ". {\n prometheus :9153 :9154\n}",
                "line 2: prometheus: unexpected argument \":9154\"",
            ),
            (
                ". {\n reload 1s\n}",
                "line 2: reload: interval must be at least 2s, got 1s",
            ),
            (
                ". {\n reload 30s 500ms\n}",
                "line 2: reload: jitter must be at least 1s, got 500ms",
            ),
            (". {\n reload soon\n}", "line 2: reload: invalid interval \"soon\""),
            // kubernetes
            (
                ".:53 {\n  errors\n  kubernetes cluster.local {\n    pods insecure\n    fallthrough\n  }\n  kubernetes x {\n    ttl 99999\n  }\n}",
                "line 8: kubernetes: ttl must be between 0 and 3600, got 99999",
            ),
            (
                ". {\n kubernetes {\n  ttl 99999\n }\n}",
                "line 3: kubernetes: ttl must be between 0 and 3600, got 99999",
            ),
            (
                ". {\n kubernetes {\n  ttl -1\n }\n}",
                "line 3: kubernetes: invalid ttl \"-1\"",
            ),
            (
                ". {\n kubernetes {\n  pods open\n }\n}",
                "line 3: kubernetes: invalid pods mode \"open\"",
            ),
            (
                ". {\n kubernetes {\n  kubeconfig /etc/kubeconfig\n }\n}",
                "line 3: kubernetes: unsupported option \"kubeconfig\"",
            ),
            (
                ". {\n kubernetes {\n  endpoint https://10.0.0.1:6443\n }\n}",
                "line 3: kubernetes: unsupported option \"endpoint\"",
            ),
            (
                ". {\n kubernetes {\n  tls cert key ca\n }\n}",
                "line 3: kubernetes: unsupported option \"tls\"",
            ),
            (
                ". {\n kubernetes {\n  apiserver x\n }\n}",
                "line 3: kubernetes: unsupported option \"apiserver\"",
            ),
            (
                ". {\n kubernetes {\n  ignore everything\n }\n}",
                "line 3: kubernetes: unsupported option \"ignore everything\"",
            ),
            (
                ". {\n kubernetes {\n  namespaces\n }\n}",
                "line 3: kubernetes: namespaces needs at least one namespace",
            ),
            (
                ". {\n kubernetes {\n  namespaces Default\n }\n}",
                "line 3: kubernetes: invalid namespace \"Default\"",
            ),
            (
                ". {\n kubernetes {\n  noendpoints yes\n }\n}",
                "line 3: kubernetes: noendpoints: unexpected argument \"yes\"",
            ),
            (
                ". {\n kubernetes cluster..local\n}",
                "line 2: kubernetes: invalid name \"cluster..local\"",
            ),
            // forward
            (". {\n forward\n}", "line 2: forward: expected FROM and at least one upstream"),
            (". {\n forward .\n}", "line 2: forward: expected at least one upstream after FROM"),
            (
                ". {\n forward . tls://1.1.1.1\n}",
                "line 2: forward: tls upstreams are not supported: \"tls://1.1.1.1\"",
            ),
            (
                ". {\n forward . https://1.1.1.1\n}",
                "line 2: forward: unsupported transport https:// in \"https://1.1.1.1\"",
            ),
            (
                ". {\n forward . dns.google\n}",
                "line 2: forward: invalid upstream \"dns.google\": expected an IP address, IP:PORT or a file path",
            ),
            (
                ". {\n forward . 10.0.0.300\n}",
                "line 2: forward: invalid upstream \"10.0.0.300\": expected an IP address, IP:PORT or a file path",
            ),
            (
                ". {\n forward . 1.1.1.1 {\n  policy fastest\n }\n}",
                "line 3: forward: unknown policy \"fastest\"",
            ),
            (
                ". {\n forward . 1.1.1.1 {\n  max_concurrent lots\n }\n}",
                "line 3: forward: invalid max_concurrent \"lots\"",
            ),
            (
                ". {\n forward . 1.1.1.1 {\n  tls_servername dns.google\n }\n}",
                "line 3: forward: unsupported option \"tls_servername\"",
            ),
            (
                ". {\n forward . 1.1.1.1 {\n  expire never\n }\n}",
                "line 3: forward: invalid expire duration \"never\"",
            ),
            (
                ". {\n forward . 1.1.1.1 {\n  health_check 1s rec\n }\n}",
                "line 3: forward: health_check: unknown option \"rec\"",
            ),
            (
                ". {\n forward . 1.1.1.1 {\n  except\n }\n}",
                "line 3: forward: except needs at least one zone",
            ),
            (
                ". {\n forward . 1.1.1.1 {\n  force_tcp\n  prefer_udp\n }\n}",
                "line 2: forward: force_tcp and prefer_udp are mutually exclusive",
            ),
            // cache
            (". {\n cache 0\n}", "line 2: cache: ttl must be positive"),
            (". {\n cache 30s\n}", "line 2: cache: ttl is a number of seconds, got \"30s\""),
            (
                ". {\n cache {\n  success\n }\n}",
                "line 3: cache: success needs a capacity",
            ),
            (
                ". {\n cache {\n  denial many\n }\n}",
                "line 3: cache: invalid capacity \"many\"",
            ),
            (
                ". {\n cache {\n  success 100 0\n }\n}",
                "line 3: cache: ttl must be positive",
            ),
            (
                ". {\n cache {\n  success 100 60 5 1\n }\n}",
                "line 3: cache: success: unexpected argument \"1\"",
            ),
            (
                ". {\n cache {\n  keepttl\n }\n}",
                "line 3: cache: unsupported option \"keepttl\"",
            ),
            // hosts
            (
                ". {\n hosts {\n  10.0.0.300 foo.example\n }\n}",
                "line 3: hosts: invalid IP address \"10.0.0.300\"",
            ),
            (
                ". {\n hosts {\n  fd00::zz foo.example\n }\n}",
                "line 3: hosts: invalid IP address \"fd00::zz\"",
            ),
            (
                ". {\n hosts {\n  10.0.0.1\n }\n}",
                "line 3: hosts: entry \"10.0.0.1\" has no names",
            ),
            (
                ". {\n hosts {\n  10.0.0.1 bad..name\n }\n}",
                "line 3: hosts: invalid name \"bad..name\"",
            ),
            (
                ". {\n hosts {\n  ttl 0\n }\n}",
                "line 3: hosts: ttl must be between 1 and 65535, got 0",
            ),
            (
                ". {\n hosts {\n  reload often\n }\n}",
                "line 3: hosts: invalid reload duration \"often\"",
            ),
            (
                ". {\n hosts {\n  foo.example 10.0.0.1\n }\n}",
                "line 3: hosts: unsupported option \"foo.example\"",
            ),
            // rewrite
            (". {\n rewrite\n}", "line 2: rewrite: expected name FROM TO"),
            (
                ". {\n rewrite type A AAAA\n}",
                "line 2: rewrite: unsupported rule \"type\"; only name is supported",
            ),
            (". {\n rewrite name a.example\n}", "line 2: rewrite: expected name [MATCH] FROM TO"),
            (
                ". {\n rewrite name a.example b.example extra\n}",
                "line 2: rewrite: unexpected argument \"extra\"",
            ),
            (
                ". {\n rewrite name a.example b.example answer value x y\n}",
                "line 2: rewrite: unsupported answer rewrite \"value\"",
            ),
            (
                ". {\n rewrite name a..example b.example\n}",
                "line 2: rewrite: invalid name \"a..example\"",
            ),
            (
                ". {\n rewrite name a.example b.example {\n }\n}",
                "line 2: rewrite: takes no block",
            ),
        ];
        for (input, message) in cases {
            check(input, Err(message));
        }
        let sixteen = vec!["10.0.0.1"; 16].join(" ");
        check(
            &format!(". {{\n forward . {sixteen}\n}}"),
            Err("line 2: forward: at most 15 upstreams, got 16"),
        );
    }

    #[test]
    fn error_carries_line() {
        let err = parse(". {\n errors\n\n foo\n}").expect_err("foo is not a plugin");
        assert_eq!(
            err,
            CorefileError {
                line: 4,
                message: "unknown plugin \"foo\"".into(),
            }
        );
    }
}
