//! Static checks of `docker-compose.yml`, the `Dockerfile` and `.dockerignore`: they read the
//! files, against the code they must agree with, and need no Docker engine (so every machine
//! that runs the tests runs them, in a second). `scripts/compose_check.sh` runs the stack for
//! real where an engine is there.
//!
//!
//! * `scripts/services.txt`, the one table of binaries, default ports and databases that
//!   `scripts/up.sh` also reads, is checked against the workspace's Cargo manifests (every
//!   binary listed, each under its package) and against each crate's source (the default port
//!   and database name appear in its code);
//! * every binary has a compose service that runs it on that port, with a health check on
//!   `/api/health`, a `DATABASE_URL` naming the database the Postgres init script
//!   (`docker/postgres-init/`) creates, `depends_on` with `condition: service_healthy`, and only
//!   environment variables the code reads;
//! * the app's `DTM_URL`/`TRANS_OUT_URL`/`TRANS_IN_URL`/`STOCK_URL` point at the right services,
//!   in compose and in `scripts/up.sh` alike;
//! * the coordinator's admin actions are never open by default: compose gives it a token and
//!   publishes its port on the host's loopback only;
//! * every published port is on the host's loopback, with the host port overridable, and
//!   `scripts/compose_check.sh` knows each one;
//! * the Dockerfile builds and installs every binary, compiles the dependencies in a layer of
//!   their own and ships the binaries stripped of debug info; `.dockerignore` keeps the context
//!   to the workspace's crates.
//!
//! Each of those tests collects every problem it finds and fails with the whole list. The last
//! tests run `scripts/up.sh` itself (real processes, real Postgres): the coordinator it starts
//! refuses an admin action without the token it generated, and a `DTM_URL` naming another
//! coordinator leaves the bundled one unstarted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_norway::Value;
use service_kit::coordinator_check::DEFAULT_DTM_URL;

/// Environment variables that point the AP at the other services: variable, target binary,
/// path under the target's base URL. The app's own defaults must be these URLs on 127.0.0.1.
const APP_URL_VARS: [(&str, &str, &str); 5] = [
    ("DTM_URL", "coordinator", "/api/dtmsvr"),
    ("APP_URL", "app", "/api"),
    ("TRANS_OUT_URL", "trans-out", "/api"),
    ("TRANS_IN_URL", "trans-in", "/api"),
    ("STOCK_URL", "stock", "/api"),
];

/// The file that reads the settings every RM shares ([`service_kit::settings::RmCommonSettings`]).
const RM_COMMON_FILE: &str = "crates/service-kit/src/settings.rs";

/// What an RM crate's code names when it reads its environment through [`RM_COMMON_FILE`].
const RM_COMMON_READER: &str = "RmCommonSettings";

/// Variables read by shared code rather than by a crate's `configuration.rs`: name, file that
/// reads it (relative to the repository), a text that file must contain, and the text a crate's
/// code must contain for that shared file to count as its reader (`None`: any crate's). A crate
/// that does not use the shared reader must read the variable itself.
const SHARED_VARS: [(&str, &str, &str, Option<&str>); 11] = [
    (
        "RUST_LOG",
        "crates/service-kit/src/logging.rs",
        "RUST_LOG",
        None,
    ),
    (
        "BRANCH_SIGNING_SECRET",
        "crates/tcc/src/signing.rs",
        "\"BRANCH_SIGNING_SECRET\"",
        None,
    ),
    ("HOST", RM_COMMON_FILE, "\"HOST\"", Some(RM_COMMON_READER)),
    (
        "DTM_URL",
        RM_COMMON_FILE,
        "\"DTM_URL\"",
        Some(RM_COMMON_READER),
    ),
    ("PORT", RM_COMMON_FILE, "\"PORT\"", Some(RM_COMMON_READER)),
    (
        "DATABASE_URL",
        RM_COMMON_FILE,
        "\"DATABASE_URL\"",
        Some(RM_COMMON_READER),
    ),
    (
        "DB_POOL_SIZE",
        RM_COMMON_FILE,
        "\"DB_POOL_SIZE\"",
        Some(RM_COMMON_READER),
    ),
    (
        "JSON_LIMIT",
        RM_COMMON_FILE,
        "\"JSON_LIMIT\"",
        Some(RM_COMMON_READER),
    ),
    (
        "FAULT_INJECTION",
        RM_COMMON_FILE,
        "\"FAULT_INJECTION\"",
        Some(RM_COMMON_READER),
    ),
    (
        "BARRIER_RETENTION_SECONDS",
        RM_COMMON_FILE,
        "\"BARRIER_RETENTION_SECONDS\"",
        Some(RM_COMMON_READER),
    ),
    (
        "RETENTION_BATCH",
        RM_COMMON_FILE,
        "\"RETENTION_BATCH\"",
        Some(RM_COMMON_READER),
    ),
];

/// One row of `scripts/services.txt`.
#[derive(Debug, Clone)]
struct ServiceRow {
    name: String,
    port: u16,
    database: Option<String>,
    package: String,
}

/// Problems found by one test; it fails listing all of them.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problem(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `scripts/services.txt`: whitespace-separated columns, `#` comments.
fn service_table() -> Vec<ServiceRow> {
    let path = repo_root().join("scripts/services.txt");
    read(&path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.len(), 4, "{}: bad line {line:?}", path.display());
            ServiceRow {
                name: cols[0].to_owned(),
                port: cols[1]
                    .parse()
                    .unwrap_or_else(|_| panic!("{}: bad port in {line:?}", path.display())),
                database: (cols[2] != "-").then(|| cols[2].to_owned()),
                package: cols[3].to_owned(),
            }
        })
        .collect()
}

fn row<'a>(table: &'a [ServiceRow], name: &str) -> &'a ServiceRow {
    table
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("scripts/services.txt has no {name}"))
}

/// Every binary of the workspace, mapped to (package name, package directory), as Cargo finds
/// them: `[[bin]]` entries, `src/main.rs`, `src/bin/*.rs` and `src/bin/*/main.rs`.
fn workspace_binaries() -> BTreeMap<String, (String, PathBuf)> {
    let root = repo_root();
    let manifest: toml::Table = read(&root.join("Cargo.toml")).parse().expect("Cargo.toml");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace.members");
    let mut bins = BTreeMap::new();
    for member in members {
        let dir = root.join(member.as_str().expect("member path"));
        let krate: toml::Table = read(&dir.join("Cargo.toml"))
            .parse()
            .expect("member Cargo.toml");
        let package = krate["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_owned();
        let mut names = BTreeSet::new();
        if let Some(entries) = krate.get("bin").and_then(|b| b.as_array()) {
            for entry in entries {
                names.insert(entry["name"].as_str().expect("[[bin]] name").to_owned());
            }
        }
        let autobins = krate["package"]
            .get("autobins")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        if autobins {
            if dir.join("src/main.rs").is_file() {
                names.insert(package.clone());
            }
            if let Ok(entries) = fs::read_dir(dir.join("src/bin")) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "rs") {
                        names.insert(path.file_stem().unwrap().to_string_lossy().into_owned());
                    } else if path.join("main.rs").is_file() {
                        names.insert(path.file_name().unwrap().to_string_lossy().into_owned());
                    }
                }
            }
        }
        for name in names {
            bins.insert(name, (package.clone(), dir.clone()));
        }
    }
    bins
}

/// The code (comment lines dropped) of every `.rs` file under `dir/src`.
fn crate_code(dir: &Path) -> String {
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                for line in read(&path).lines() {
                    if !line.trim_start().starts_with("//") {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
        }
    }
    let mut out = String::new();
    walk(&dir.join("src"), &mut out);
    out
}

/// Whether `number` occurs in `text` as a whole number (not inside a longer one).
fn has_number(text: &str, number: u16) -> bool {
    let needle = number.to_string();
    text.match_indices(&needle).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn compose() -> serde_norway::Mapping {
    let path = repo_root().join("docker-compose.yml");
    let doc: Value = serde_norway::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    doc.get("services")
        .and_then(Value::as_mapping)
        .cloned()
        .expect("docker-compose.yml has a `services` mapping")
}

fn service<'a>(services: &'a serde_norway::Mapping, name: &str) -> Option<&'a Value> {
    services.get(Value::String(name.to_owned()))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A service's `environment`, in either of compose's forms (mapping or `KEY=value` list).
fn environment(svc: &Value) -> BTreeMap<String, String> {
    match svc.get("environment") {
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v).unwrap_or_default())))
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| {
                let (k, v) = i.as_str()?.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A `command`, `entrypoint` or health check `test` as a list of words.
fn words(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
        _ => Vec::new(),
    }
}

/// The binary a compose service runs: the first word of its `command`.
fn runs(svc: &Value) -> Option<String> {
    words(svc.get("command")).into_iter().next()
}

/// Splits `scheme://[user@]host:port/path` into (host, port, path).
fn split_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.split_once("://")?.1;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = host_port.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?, path.to_owned()))
}

/// The databases created by the files mounted on `/docker-entrypoint-initdb.d` of the
/// `postgres` service (`CREATE DATABASE <name>` statements).
fn init_script_databases(
    services: &serde_norway::Mapping,
    problems: &mut Problems,
) -> BTreeSet<String> {
    let root = repo_root();
    let mut sources = Vec::new();
    let volumes = service(services, "postgres")
        .and_then(|p| p.get("volumes"))
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    for volume in &volumes {
        let (source, target) = match volume {
            Value::String(s) => {
                let mut parts = s.split(':');
                (
                    parts.next().map(str::to_owned),
                    parts.next().map(str::to_owned),
                )
            }
            Value::Mapping(_) => (
                volume.get("source").and_then(scalar),
                volume.get("target").and_then(scalar),
            ),
            _ => (None, None),
        };
        if let (Some(source), Some(target)) = (source, target) {
            if target
                .trim_end_matches('/')
                .starts_with("/docker-entrypoint-initdb.d")
            {
                sources.push(root.join(source));
            }
        }
    }
    problems.check(!sources.is_empty(), || {
        "postgres mounts no init script on /docker-entrypoint-initdb.d".into()
    });
    let mut files = Vec::new();
    for source in sources {
        if source.is_dir() {
            for entry in fs::read_dir(&source).expect("init dir").flatten() {
                files.push(entry.path());
            }
        } else if source.is_file() {
            files.push(source);
        } else {
            problems.add(format!(
                "init script source {} does not exist",
                source.display()
            ));
        }
    }
    let mut databases = BTreeSet::new();
    for file in files {
        let text = read(&file);
        let words: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .flat_map(str::split_whitespace)
            .collect();
        for w in words.windows(3) {
            if w[0].eq_ignore_ascii_case("create") && w[1].eq_ignore_ascii_case("database") {
                databases.insert(w[2].trim_end_matches(';').trim_matches('"').to_owned());
            }
        }
    }
    databases
}

#[test]
fn the_service_table_lists_every_binary_with_the_defaults_its_code_uses() {
    let table = service_table();
    let bins = workspace_binaries();
    let mut problems = Problems::default();
    let listed: BTreeSet<&str> = table.iter().map(|r| r.name.as_str()).collect();
    // Tools, not services: the benchmark's load generator (scripts/bench.sh) runs beside the
    // system and is never deployed.
    const TOOLS: [&str; 1] = ["tcc-bench"];
    for name in bins.keys().filter(|name| !TOOLS.contains(&name.as_str())) {
        problems.check(listed.contains(name.as_str()), || {
            format!("binary {name} is not in scripts/services.txt")
        });
    }
    for r in &table {
        let Some((package, dir)) = bins.get(&r.name) else {
            problems.add(format!(
                "scripts/services.txt lists {}, which no Cargo manifest builds",
                r.name
            ));
            continue;
        };
        problems.check(*package == r.package, || {
            format!(
                "{} is built by package {package}, scripts/services.txt says {}",
                r.name, r.package
            )
        });
        let code = crate_code(dir);
        problems.check(has_number(&code, r.port), || {
            format!(
                "default port {} of {} does not appear in {}/src",
                r.port,
                r.name,
                dir.display()
            )
        });
        if let Some(db) = &r.database {
            problems.check(
                code.contains(&format!("\"{db}\"")) || code.contains(&format!("/{db}\"")),
                || {
                    format!(
                        "default database {db} of {} does not appear in {}/src",
                        r.name,
                        dir.display()
                    )
                },
            );
        }
    }
    problems.assert_none("scripts/services.txt against the Cargo manifests and the code");
}

#[test]
fn every_binary_has_a_compose_service_on_its_default_port_with_a_health_check() {
    let table = service_table();
    let services = compose();
    let mut problems = Problems::default();
    for r in &table {
        let Some(svc) = service(&services, &r.name) else {
            problems.add(format!("docker-compose.yml has no service {}", r.name));
            continue;
        };
        let name = &r.name;
        problems.check(runs(svc).as_deref() == Some(name.as_str()), || {
            format!("service {name} runs {:?}, not the binary {name}", runs(svc))
        });
        problems.check(
            svc.get("build").is_some() || svc.get("image").is_some(),
            || format!("service {name} has neither build nor image"),
        );
        let env = environment(svc);
        problems.check(env.get("PORT") == Some(&r.port.to_string()), || {
            format!(
                "service {name}: PORT is {:?}, the binary's default is {}",
                env.get("PORT"),
                r.port
            )
        });
        problems.check(
            env.get("HOST").map(String::as_str) == Some("0.0.0.0"),
            || {
                format!(
                    "service {name}: HOST must be 0.0.0.0 inside a container, is {:?}",
                    env.get("HOST")
                )
            },
        );
        let test = words(svc.get("healthcheck").and_then(|h| h.get("test"))).join(" ");
        let port = r.port;
        problems.check(
            test.contains(&format!("http://localhost:{port}/api/health"))
                || test.contains(&format!("http://127.0.0.1:{port}/api/health")),
            || format!("service {name}: health check {test:?} does not call /api/health on port {port}"),
        );
    }
    // Every service publishes its port on the host's loopback only, as
    // `127.0.0.1:${<NAME>_HOST_PORT:-<port>}:<port>`, so a user can move it.
    for r in table
        .iter()
        .map(|r| (r.name.as_str(), r.port))
        .chain([("postgres", 5432)])
    {
        let (name, port) = r;
        let published = service(&services, name)
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_sequence)
            .map(|ports| ports.iter().filter_map(scalar).collect::<Vec<_>>())
            .unwrap_or_default();
        let variable = format!("{}_HOST_PORT", name.replace('-', "_").to_ascii_uppercase());
        let wanted = format!("127.0.0.1:${{{variable}:-{port}}}:{port}");
        problems.check(published == [wanted.clone()], || {
            format!("service {name} publishes {published:?}, not [{wanted:?}] (loopback only, host port overridable)")
        });
    }
    problems.assert_none("docker-compose.yml services against scripts/services.txt");
}

#[test]
fn every_database_url_names_a_database_that_the_init_script_creates() {
    let table = service_table();
    let services = compose();
    let mut problems = Problems::default();
    let created = init_script_databases(&services, &mut problems);
    let wanted: BTreeSet<String> = table.iter().filter_map(|r| r.database.clone()).collect();
    problems.check(created == wanted, || {
        format!("the init script creates {created:?}, the services use {wanted:?}")
    });
    let postgres = service(&services, "postgres");
    problems.check(
        postgres
            .and_then(|p| p.get("image"))
            .and_then(Value::as_str)
            .is_some_and(|i| i.starts_with("postgres:")),
        || "service postgres must use the official postgres image".into(),
    );
    let pg_test = words(
        postgres
            .and_then(|p| p.get("healthcheck"))
            .and_then(|h| h.get("test")),
    );
    problems.check(pg_test.iter().any(|w| w.contains("pg_isready")), || {
        format!("service postgres: health check {pg_test:?} does not use pg_isready")
    });
    // pg_isready answers for a database that does not exist: the check must name each one the
    // services need.
    for db in &wanted {
        problems.check(pg_test.iter().any(|w| w.contains(&format!("'{db}'"))), || {
            format!("service postgres: health check {pg_test:?} does not check that database {db} exists")
        });
    }
    for r in &table {
        let Some(svc) = service(&services, &r.name) else {
            continue;
        };
        let env = environment(svc);
        match (&r.database, env.get("DATABASE_URL")) {
            (None, None) => {}
            (None, Some(url)) => problems.add(format!(
                "service {} has no database but DATABASE_URL={url}",
                r.name
            )),
            (Some(db), None) => problems.add(format!(
                "service {} has no DATABASE_URL (wants {db})",
                r.name
            )),
            (Some(db), Some(url)) => {
                match split_url(url) {
                    Some((host, port, path)) => {
                        problems.check(host == "postgres" && port == 5432, || {
                        format!("service {}: DATABASE_URL {url} is not the postgres service on 5432", r.name)
                    });
                        let named = path.trim_start_matches('/');
                        problems.check(named == db, || {
                        format!("service {}: DATABASE_URL names {named:?}, scripts/services.txt says {db}", r.name)
                    });
                        problems.check(created.contains(named), || {
                            format!(
                                "service {}: database {named:?} is not created by the init script",
                                r.name
                            )
                        });
                    }
                    None => problems.add(format!(
                        "service {}: cannot parse DATABASE_URL {url}",
                        r.name
                    )),
                }
            }
        }
    }
    problems.assert_none("databases in docker-compose.yml and docker/postgres-init");
}

#[test]
fn compose_sets_only_environment_variables_that_the_code_reads() {
    let root = repo_root();
    let table = service_table();
    let bins = workspace_binaries();
    let services = compose();
    let mut problems = Problems::default();
    for r in &table {
        let (Some(svc), Some((_, dir))) = (service(&services, &r.name), bins.get(&r.name)) else {
            continue;
        };
        let code = crate_code(dir);
        for var in environment(svc).keys() {
            let shared = SHARED_VARS.iter().find(|(v, _, _, reader)| {
                v == var && reader.is_none_or(|reader| code.contains(reader))
            });
            if let Some((_, file, text, _)) = shared {
                problems.check(read(&root.join(file)).contains(text), || {
                    format!("service {}: {var} is expected to be read by {file}, which does not mention it", r.name)
                });
                continue;
            }
            problems.check(code.contains(&format!("\"{var}\"")), || {
                format!("service {}: {var} is set in docker-compose.yml but {}/src never reads \"{var}\"", r.name, dir.display())
            });
        }
    }
    problems.assert_none("environment variable names in docker-compose.yml");
}

#[test]
fn the_apps_service_urls_point_at_the_right_services_in_compose_and_up_sh() {
    let root = repo_root();
    let table = service_table();
    let bins = workspace_binaries();
    let services = compose();
    let mut problems = Problems::default();
    let app_code = crate_code(&bins["app"].1);
    let app_env = service(&services, "app")
        .map(environment)
        .unwrap_or_default();
    let up_sh = read(&root.join("scripts/up.sh"));
    for (var, target, path) in APP_URL_VARS {
        let port = row(&table, target).port;
        // The app's own default, which the conventions fix.
        let default = format!("\"http://127.0.0.1:{port}{path}\"");
        // The coordinator's default is the one every binary shares, a named constant.
        let shared = var == "DTM_URL"
            && app_code.contains("DEFAULT_DTM_URL")
            && format!("\"{DEFAULT_DTM_URL}\"") == default;
        problems.check(shared || app_code.contains(&default), || {
            format!("the app's source has no default {default} for {var}")
        });
        // Compose: http://<service running target>:<its PORT><path>.
        match app_env.get(var).and_then(|u| split_url(u)) {
            Some((host, url_port, url_path)) => {
                let host_runs = service(&services, &host).and_then(runs);
                problems.check(host_runs.as_deref() == Some(target), || {
                    format!("compose app {var}: host {host} runs {host_runs:?}, not {target}")
                });
                problems.check(url_port == port && url_path == path, || {
                    format!("compose app {var}: port/path {url_port}{url_path}, want {port}{path}")
                });
            }
            None => problems.add(format!("compose app: {var} missing or not a URL")),
        }
        // up.sh: `echo "VAR=$(url_of target)path"`, except DTM_URL: the caller's, else
        // `bundled_dtm_url="$(url_of coordinator)/api/dtmsvr"`.
        let lines = if var == "DTM_URL" {
            vec![
                format!("bundled_dtm_url=\"$(url_of {target}){path}\""),
                "DTM_URL=\"${DTM_URL:-$bundled_dtm_url}\"".to_owned(),
                "echo \"DTM_URL=$DTM_URL\"".to_owned(),
            ]
        } else {
            vec![format!("{var}=$(url_of {target}){path}\"")]
        };
        for line in lines {
            problems.check(up_sh.contains(&line), || {
                format!("scripts/up.sh does not contain {line}")
            });
        }
    }
    // The RMs ask the AP's coordinator about Trys without a gid token: the same DTM_URL.
    for r in table
        .iter()
        .filter(|r| r.database.is_some() && r.name != "coordinator")
    {
        let rm_url = service(&services, &r.name)
            .map(environment)
            .and_then(|env| env.get("DTM_URL").cloned());
        problems.check(rm_url.as_ref() == app_env.get("DTM_URL"), || {
            format!(
                "compose {}: DTM_URL {rm_url:?} is not the app's {:?}",
                r.name,
                app_env.get("DTM_URL")
            )
        });
    }
    // up.sh takes ports and databases from the same table.
    let lib = read(&root.join("scripts/lib/services.sh"));
    problems.check(up_sh.contains("scripts/lib/services.sh") && lib.contains("scripts/services.txt"), || {
        "scripts/up.sh must read ports and databases from scripts/services.txt via scripts/lib/services.sh".into()
    });
    problems.check(
        up_sh.contains("DATABASE_URL=$PG_URL/$db") && up_sh.contains("PORT=$(svc_port"),
        || "scripts/up.sh must set DATABASE_URL and PORT from the service table".into(),
    );
    problems.assert_none("the app's service URLs");
}

#[test]
fn every_dependency_waits_for_a_healthy_service() {
    let table = service_table();
    let services = compose();
    let mut problems = Problems::default();
    for r in &table {
        let Some(svc) = service(&services, &r.name) else {
            continue;
        };
        let deps = svc.get("depends_on");
        let mut wanted: Vec<&str> = Vec::new();
        if r.database.is_some() {
            wanted.push("postgres");
        }
        if r.name == "app" {
            // The app waits for every service its URLs name, except itself (APP_URL).
            wanted.extend(
                APP_URL_VARS
                    .iter()
                    .map(|(_, target, _)| *target)
                    .filter(|target| *target != "app"),
            );
        }
        match deps {
            None if wanted.is_empty() => {}
            Some(Value::Mapping(m)) => {
                for (dep, spec) in m {
                    let dep = dep.as_str().unwrap_or_default();
                    problems.check(
                        spec.get("condition").and_then(Value::as_str) == Some("service_healthy"),
                        || format!("service {} depends on {dep} without condition: service_healthy", r.name),
                    );
                    problems.check(
                        service(&services, dep).is_some_and(|d| d.get("healthcheck").is_some()),
                        || format!("service {} waits for {dep}, which has no health check", r.name),
                    );
                }
                for dep in &wanted {
                    problems.check(m.contains_key(Value::String((*dep).to_owned())), || {
                        format!("service {} does not wait for {dep}", r.name)
                    });
                }
            }
            _ => problems.add(format!(
                "service {}: depends_on must be a mapping with condition: service_healthy on {wanted:?}",
                r.name
            )),
        }
    }
    problems.assert_none("depends_on in docker-compose.yml");
}

#[test]
fn the_dockerfile_builds_and_installs_every_binary() {
    let dockerfile = read(&repo_root().join("Dockerfile"));
    let mut problems = Problems::default();
    problems.check(dockerfile.contains("--locked"), || {
        "the image must build with --locked".into()
    });
    for r in service_table() {
        let name = &r.name;
        problems.check(
            [' ', '\n', '"']
                .iter()
                .any(|end| dockerfile.contains(&format!("--bin {name}{end}"))),
            || format!("the Dockerfile does not build --bin {name}"),
        );
        problems.check(
            dockerfile.contains(&format!("target/release/{name} "))
                || dockerfile.contains(&format!("target/release/{name}\n")),
            || format!("the Dockerfile does not install target/release/{name}"),
        );
    }
    problems.assert_none("Dockerfile");
}

/// The Dockerfile's instructions (continuation lines joined, comments dropped), in order.
fn dockerfile_instructions() -> Vec<String> {
    let text = read(&repo_root().join("Dockerfile"));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

#[test]
fn the_dockerfile_compiles_the_dependencies_in_a_layer_of_their_own_and_ships_stripped_binaries() {
    let instructions = dockerfile_instructions();
    let position = |wanted: &dyn Fn(&str) -> bool| instructions.iter().position(|i| wanted(i));
    let mut problems = Problems::default();
    let cook = position(&|i| i.starts_with("RUN cargo chef cook"));
    let build = position(&|i| i.starts_with("RUN cargo build"));
    // The sources are copied into the builder only after the dependencies are compiled: before
    // that it holds only the recipe, so a source change leaves the dependency layer cached.
    let sources = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.starts_with("COPY . ."))
        .map(|(n, _)| n)
        .next_back();
    match (cook, sources, build) {
        (Some(cook), Some(sources), Some(build)) => problems.check(cook < sources && sources < build, || {
            format!("the builder must cook the dependencies (instruction {cook}), then copy the sources ({sources}), then build ({build})")
        }),
        _ => problems.add(format!(
            "the Dockerfile needs `RUN cargo chef cook`, then `COPY . .`, then `RUN cargo build` (found {cook:?}, {sources:?}, {build:?})"
        )),
    }
    problems.check(
        instructions.iter().any(|i| i == "ARG STRIP=debuginfo")
            && instructions
                .iter()
                .any(|i| i == "ENV CARGO_PROFILE_RELEASE_STRIP=$STRIP"),
        || "the binaries must be stripped of debug info by default (ARG STRIP=debuginfo, ENV CARGO_PROFILE_RELEASE_STRIP=$STRIP)".into(),
    );
    problems.assert_none("the Dockerfile's layers");
}

#[test]
fn the_build_context_is_the_workspace_crates_and_nothing_else() {
    let ignore = read(&repo_root().join(".dockerignore"));
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut problems = Problems::default();
    problems.check(rules.first() == Some(&"*"), || {
        format!(
            "`.dockerignore` must start by leaving everything out (`*`), starts with {:?}",
            rules.first()
        )
    });
    let manifest: toml::Table = read(&repo_root().join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml parses");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members")
        .iter()
        .filter_map(|m| m.as_str())
        .map(|m| m.split('/').next().unwrap_or(m).to_owned());
    let wanted: BTreeSet<String> = ["Cargo.toml".to_owned(), "Cargo.lock".to_owned()]
        .into_iter()
        .chain(members)
        .collect();
    let included: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r.strip_prefix('!'))
        .map(str::to_owned)
        .collect();
    problems.check(included == wanted, || {
        format!("`.dockerignore` lets in {included:?}; the build reads {wanted:?}")
    });
    problems.check(rules.contains(&"**/tests"), || {
        "`.dockerignore` must leave test targets out (`**/tests`): touching a test would rebuild the image".into()
    });
    problems.assert_none(".dockerignore");
}

#[test]
fn the_compose_check_knows_every_published_port() {
    let services = compose();
    let check = read(&repo_root().join("scripts/compose_check.sh"));
    let mut problems = Problems::default();
    for (name, svc) in services.iter().filter_map(|(k, v)| Some((k.as_str()?, v))) {
        for published in svc
            .get("ports")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(scalar)
        {
            // 127.0.0.1:${VAR:-default}:port, as the test above requires.
            let Some((variable, default, port)) = published
                .strip_prefix("127.0.0.1:${")
                .and_then(|rest| rest.split_once(":-"))
                .and_then(|(variable, rest)| rest.split_once("}:").map(|(d, p)| (variable, d, p)))
            else {
                problems.add(format!("service {name} publishes {published:?}"));
                continue;
            };
            let line = format!("\"{variable} {default} {name} {port}\"");
            problems.check(check.contains(&line), || {
                format!("scripts/compose_check.sh's PORTS has no {line}")
            });
        }
    }
    problems.assert_none("scripts/compose_check.sh against docker-compose.yml");
}

/// The value compose gives a variable written `${NAME:-default}` / `${NAME-default}` when the
/// caller does not set it (`Some("")` for a plain `${NAME}`); a literal value as is; `None` for
/// `${NAME:?message}`, which stops `docker-compose up` unless the caller sets it.
fn compose_default(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        return Some(value.to_owned());
    };
    if inner.contains(":?") || inner.contains('?') {
        return None;
    }
    Some(
        inner
            .split_once(":-")
            .or_else(|| inner.split_once('-'))
            .map(|(_, default)| default.to_owned())
            .unwrap_or_default(),
    )
}

#[test]
fn compose_gives_the_coordinator_an_admin_token_and_publishes_it_on_the_loopback_only() {
    let services = compose();
    let port = row(&service_table(), "coordinator").port;
    let mut problems = Problems::default();
    let coordinator = service(&services, "coordinator");
    let env = coordinator.map(environment).unwrap_or_default();
    match env.get("ADMIN_TOKEN") {
        None => problems.add("the coordinator has no ADMIN_TOKEN: its admin actions are open"),
        Some(value) => match compose_default(value) {
            // Required from the caller: safe, if unfriendly.
            None => {}
            Some(default) => problems.check(!default.trim().is_empty(), || {
                format!("the coordinator's ADMIN_TOKEN {value:?} is empty by default: its admin actions are open")
            }),
        },
    }
    let published: Vec<String> = coordinator
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_sequence)
        .map(|ports| ports.iter().filter_map(scalar).collect())
        .unwrap_or_default();
    for p in &published {
        problems.check(p.starts_with("127.0.0.1:"), || {
            format!("the coordinator's port {p:?} is published beyond the host's loopback, with a public demo admin token")
        });
    }
    problems.check(
        published.iter().any(|p| p.ends_with(&format!(":{port}"))),
        || format!("the coordinator's port {port} is not published (ports: {published:?})"),
    );
    problems.assert_none("the coordinator's admin token in docker-compose.yml");
}

/// One run of `scripts/up.sh` on a private run directory, port offset and database prefix, with
/// the binaries of this test's profile ([`test_support::process::ensure_built`]); dropping it runs
/// `scripts/down.sh`, drops its databases and removes the run directory.
struct UpScript {
    run_dir: PathBuf,
    port_offset: u16,
    db_prefix: String,
}

impl UpScript {
    fn new() -> UpScript {
        test_support::process::ensure_built();
        let id = uuid::Uuid::new_v4().simple().to_string();
        // An offset that puts the coordinator on a port free right now.
        let port_offset = loop {
            let free = test_support::process::free_port();
            if free > 36789 {
                break free - 36789;
            }
        };
        let run_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("up-sh-{id}"));
        UpScript {
            run_dir,
            port_offset,
            db_prefix: format!("t_upsh_{}_", &id[..12]),
        }
    }

    /// `scripts/<script> args` with this run's settings plus `env`; the caller's ADMIN_TOKEN,
    /// DTM_URL and BRANCH_SIGNING_SECRET are removed (defaults under test). (success, output).
    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("<target>/<profile>/deps");
        let target = profile_dir.parent().expect("<target>");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => "dev",
        };
        let mut command = std::process::Command::new(repo_root().join("scripts").join(script));
        command
            .args(args)
            .env("RUN_DIR", &self.run_dir)
            .env("PORT_OFFSET", self.port_offset.to_string())
            .env("DB_PREFIX", &self.db_prefix)
            .env("PROFILE", profile)
            .env("SKIP_BUILD", "1")
            .env("CARGO_TARGET_DIR", target)
            .env("PG_URL", test_support::db::pg_url())
            .env("UP_TIMEOUT", "60")
            .env_remove("ADMIN_TOKEN")
            .env_remove("DTM_URL")
            .env_remove("BRANCH_SIGNING_SECRET");
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().expect("the script runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// `http://127.0.0.1:<the coordinator's port>` + `path`.
    fn coordinator_url(&self, path: &str) -> String {
        let port = row(&service_table(), "coordinator").port + self.port_offset;
        format!("http://127.0.0.1:{port}{path}")
    }
}

impl Drop for UpScript {
    fn drop(&mut self) {
        use diesel::{Connection as _, RunQueryDsl as _};
        let _ = self.run("down.sh", &[], &[]);
        if let Ok(mut conn) =
            diesel::PgConnection::establish(&format!("{}/postgres", test_support::db::pg_url()))
        {
            for row in service_table() {
                if let Some(db) = row.database {
                    let _ = diesel::sql_query(format!(
                        r#"DROP DATABASE IF EXISTS "{}{db}" WITH (FORCE)"#,
                        self.db_prefix
                    ))
                    .execute(&mut conn);
                }
            }
        }
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

#[tokio::test]
async fn the_coordinator_that_up_sh_starts_refuses_an_admin_action_without_the_token_it_generated()
{
    let up = UpScript::new();
    let (ok, output) = up.run("up.sh", &["coordinator"], &[]);
    assert!(ok, "scripts/up.sh coordinator failed:\n{output}");
    let token_file = up.run_dir.join("admin-token");
    let token = fs::read_to_string(&token_file)
        .unwrap_or_else(|e| panic!("{} was not written: {e}\n{output}", token_file.display()));
    assert!(
        token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "the generated token is not 32 random bytes in hex: {token:?}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode,
        0o600,
        "{} is readable by others",
        token_file.display()
    );
    assert!(
        output.contains(&format!("cat {}", token_file.display())),
        "up.sh does not say where the token is:\n{output}"
    );

    let http = reqwest::Client::new();
    let force_stop = up.coordinator_url("/api/admin/transactions/no-such-gid/force-stop");
    let without = http
        .post(&force_stop)
        .send()
        .await
        .expect("the coordinator answers");
    assert_eq!(
        without.status().as_u16(),
        401,
        "force-stop without the token"
    );
    let body: serde_json::Value = without.json().await.expect("a JSON body");
    assert_eq!(body["error"], "unauthorized", "{body}");
    // With the token the action gets past authorization: the gid is unknown.
    let with = http
        .post(&force_stop)
        .bearer_auth(&token)
        .send()
        .await
        .expect("the coordinator answers");
    assert_eq!(with.status().as_u16(), 404, "force-stop with the token");

    // The token is in no log line.
    let log = read(&up.run_dir.join("coordinator.log"));
    assert!(
        !log.contains(&token),
        "the coordinator's log shows the admin token"
    );
    assert!(
        log.contains("ADMIN_TOKEN=***"),
        "up.sh's start line does not mask it:\n{log}"
    );

    // A caller's token wins, on the next start.
    let (ok, output) = up.run("down.sh", &["coordinator"], &[]);
    assert!(ok, "{output}");
    let (ok, output) = up.run(
        "up.sh",
        &["coordinator"],
        &[("ADMIN_TOKEN", "callers-token")],
    );
    assert!(ok, "scripts/up.sh coordinator failed:\n{output}");
    // A new client: the old one's pooled connection went down with the first process.
    let http = reqwest::Client::new();
    let generated = http
        .post(&force_stop)
        .bearer_auth(&token)
        .send()
        .await
        .expect("the coordinator answers");
    assert_eq!(
        generated.status().as_u16(),
        401,
        "the generated token, with a caller's set"
    );
    let callers = http
        .post(&force_stop)
        .bearer_auth("callers-token")
        .send()
        .await
        .expect("the coordinator answers");
    assert_eq!(callers.status().as_u16(), 404, "the caller's token");
}

#[test]
fn up_sh_leaves_the_bundled_coordinator_unstarted_when_dtm_url_names_another_one() {
    let up = UpScript::new();
    let other = "http://127.0.0.1:9/api/dtmsvr";
    let (ok, output) = up.run("up.sh", &["coordinator"], &[("DTM_URL", other)]);
    assert!(ok, "scripts/up.sh coordinator failed:\n{output}");
    assert!(
        output.contains(&format!("coordinator: not started (DTM_URL={other}")),
        "up.sh does not say it left the coordinator out:\n{output}"
    );
    assert!(
        !up.run_dir.join("coordinator.pid").exists(),
        "a coordinator was started:\n{output}"
    );
    // The bundled coordinator's own URL, spelled with localhost, still starts it.
    let port = row(&service_table(), "coordinator").port + up.port_offset;
    let own = format!("http://localhost:{port}/api/dtmsvr/");
    let (ok, output) = up.run("up.sh", &["coordinator"], &[("DTM_URL", &own)]);
    assert!(ok, "scripts/up.sh coordinator failed:\n{output}");
    assert!(
        up.run_dir.join("coordinator.pid").exists(),
        "DTM_URL={own} names the bundled coordinator, which was not started:\n{output}"
    );
}
