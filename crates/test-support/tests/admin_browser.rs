//! The admin page in a real browser: headless Chromium (Debian's `chromium`
//! package) driven over WebDriver by the `fantoccini` client through a `chromedriver` (Debian's
//! `chromium-driver`) that this test starts on a free port with a fresh profile directory.
//!
//! The first test fires a fireTcc through the AP, opens `/admin`, clicks the transaction in the
//! list, waits for the sequence diagram that the page renders to SVG with the vendored Mermaid,
//! and checks that it names both RMs and the final status. The second force-stops a transaction
//! from the page of a coordinator with an admin token: confirmation, 401, prompt for the token,
//! retry. The third finds a transaction held `submitted` (a `pause` fault on its Confirm) through
//! the list's gid-prefix filter, opens it, resumes it, and watches the same page, never reloaded,
//! reach `succeed` with the diagram redrawn. Screenshots are left in `target/test-artifacts/`
//! (`admin-list.png`, `admin-transaction.png`, `admin-diagram.png`, `admin-force-stop.png`,
//! `admin-live-submitted.png`, `admin-live-succeed.png`; `failure-<name>` when a step failed).
//!
//! Without chromedriver or Chromium the test is skipped with a note on stderr, except in CI (`CI`
//! set) or with `ADMIN_BROWSER_TEST=required`, where it fails: `.ci/run` installs both packages.
//! `CHROMEDRIVER` and `CHROMIUM` override the binaries' paths (default `/usr/bin/...`);
//! `ADMIN_DIAGRAM_WAIT_SECS` (default 30) bounds the wait for the diagram.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coordinator::admin::AdminToken;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use test_support::process::free_port;
use test_support::spawn::{spawn_coordinator_with, spawn_system, wait_for_status, Spawned, System};
use test_support::TestDb;

/// `<target>/`: the test binary is `<target>/<profile>/deps/<name>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .expect("test binaries live in <target>/<profile>/deps")
        .to_path_buf()
}

fn artifacts_dir() -> PathBuf {
    let dir = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("target/test-artifacts");
    dir
}

fn browser_required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || std::env::var("ADMIN_BROWSER_TEST").is_ok_and(|v| v == "required")
}

/// A chromedriver child process, killed (and its Chromium profile removed) on drop.
struct Chromedriver {
    child: Child,
    port: u16,
    chromium: PathBuf,
    profile: PathBuf,
    log: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver, or `None` (after saying why) when it or Chromium is not installed
    /// and the test is not required to run.
    fn start() -> Option<Chromedriver> {
        let path = |var: &str, default: &str| {
            PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
        };
        let driver = path("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = path("CHROMIUM", "/usr/bin/chromium");
        let missing: Vec<&Path> = [driver.as_path(), chromium.as_path()]
            .into_iter()
            .filter(|p| !p.exists())
            .collect();
        if !missing.is_empty() {
            let why = format!(
                "{missing:?} not found: install Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver), or set CHROMEDRIVER/CHROMIUM"
            );
            assert!(!browser_required(), "the browser test must run here: {why}");
            eprintln!("SKIPPED the admin page browser test: {why}");
            return None;
        }
        let port = free_port();
        let logs = target_dir().join("test-logs");
        std::fs::create_dir_all(&logs).expect("target/test-logs");
        let log = logs.join(format!("chromedriver-{port}.log"));
        let profile = std::env::temp_dir().join(format!(
            "tcc-admin-chromium-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        Some(Chromedriver {
            child,
            port,
            chromium,
            profile,
            log,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls chromedriver's `/status` until it is ready; panics with its log after 20 s.
    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = http.get(format!("{}/status", self.url())).send().await {
                if let Ok(status) = response.json::<Value>().await {
                    if status["value"]["ready"] == true {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready in 20 s; log {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new headless Chromium session, with the flags that work in this sandbox.
    async fn browser(&self) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,2200",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session: {e}; chromedriver log {}:\n{}",
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Step<T> = Result<T, String>;

fn step<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> Step<T> {
    result.map_err(|e| format!("{what}: {e}"))
}

async fn save_screenshot(browser: &Client, name: &str) -> Step<PathBuf> {
    let png = step("screenshot", browser.screenshot().await)?;
    let path = artifacts_dir().join(name);
    step("writing the screenshot", std::fs::write(&path, png))?;
    Ok(path)
}

/// `textContent` of the first element matching `css`, or `None`.
async fn text_content(browser: &Client, css: &str) -> Step<Option<String>> {
    let value = step(
        "reading textContent",
        browser
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await,
    )?;
    Ok(value.as_str().map(str::to_owned))
}

/// The diagram's state (`loading`, `rendered`, `unavailable`, `error`) and text.
async fn diagram_state(browser: &Client) -> Step<(String, String)> {
    let value = step(
        "reading the diagram's state",
        browser
            .execute(
                "const d = document.getElementById('diagram'); \
                 return d ? [d.dataset.state || '', d.textContent || ''] : ['', ''];",
                vec![],
            )
            .await,
    )?;
    let field = |i: usize| value[i].as_str().unwrap_or_default().to_owned();
    Ok((field(0), field(1)))
}

/// Waits until the detail view of `gid` has loaded (summary, branches, diagram attempt).
async fn wait_detail_loaded(browser: &Client, gid: &str) -> Step<()> {
    let css = format!("#detail-view[data-gid=\"{gid}\"][data-state=\"loaded\"]");
    step(
        "the detail view",
        browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(&css))
            .await,
    )?;
    Ok(())
}

/// The page, step by step; an `Err` names the step that failed.
async fn walk_through_the_page(browser: &Client, sys: &System, gid: &str) -> Step<()> {
    step(
        "opening /admin",
        browser.goto(&sys.coordinator.url("/admin")).await,
    )?;
    let link_css = format!("a.gid-link[data-gid=\"{gid}\"]");
    let link = step(
        "the transaction in the list",
        browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(&link_css))
            .await,
    )?;
    let row_status = text_content(browser, &format!("tr[data-gid=\"{gid}\"] .status")).await?;
    if row_status.as_deref() != Some("succeed") {
        return Err(format!("the list shows status {row_status:?}, not succeed"));
    }
    save_screenshot(browser, "admin-list.png").await?;

    step("clicking the gid", link.click().await)?;
    wait_detail_loaded(browser, gid).await?;
    let status = text_content(browser, "#detail-status").await?;
    if status.as_deref() != Some("succeed") {
        return Err(format!("the detail shows status {status:?}, not succeed"));
    }
    let ops = step(
        "the branch ops",
        browser
            .find_all(Locator::Css("#branches tbody tr[data-branch-id]"))
            .await,
    )?;
    if ops.len() != 4 {
        return Err(format!(
            "{} branch op rows, want 4 (Confirm and Cancel of two branches)",
            ops.len()
        ));
    }

    // The diagram comes from another endpoint; poll (reloading the page) until it renders.
    let wait_secs = std::env::var("ADMIN_DIAGRAM_WAIT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let (state, text) = diagram_state(browser).await?;
        match state.as_str() {
            "rendered" => break,
            _ if Instant::now() >= deadline => {
                return Err(format!(
                    "no rendered diagram within {wait_secs} s: state {state:?}, {text:?}"
                ))
            }
            "unavailable" | "error" => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                step("reloading the page", browser.refresh().await)?;
                wait_detail_loaded(browser, gid).await?;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let svg = text_content(browser, "#diagram svg")
        .await?
        .ok_or("the diagram has no <svg>")?;
    for expected in ["TransOut", "TransIn", "succeed"] {
        if !svg.contains(expected) {
            return Err(format!(
                "the rendered diagram does not name {expected}: {svg:?}"
            ));
        }
    }
    let diagram = step("the diagram", browser.find(Locator::Css("#diagram")).await)?;
    let png = step("the diagram's screenshot", diagram.screenshot().await)?;
    step(
        "writing admin-diagram.png",
        std::fs::write(artifacts_dir().join("admin-diagram.png"), png),
    )?;
    Ok(())
}

/// Screenshots the page as `name` (`failure-<name>` if `outcome` failed), closes the session,
/// and panics with the failed step.
async fn conclude(browser: Client, outcome: Step<()>, name: &str) {
    let name = match outcome {
        Ok(()) => name.to_owned(),
        Err(_) => format!("failure-{name}"),
    };
    let screenshot = save_screenshot(&browser, &name).await;
    let _ = browser.close().await;
    match (outcome, screenshot) {
        (Ok(()), Ok(path)) => eprintln!("screenshot of the admin page: {}", path.display()),
        (Ok(()), Err(e)) => panic!("the page worked, but {e}"),
        (Err(e), shot) => panic!("the admin page failed: {e}\nscreenshot: {shot:?}"),
    }
}

#[tokio::test]
async fn the_admin_page_shows_a_fired_transaction_with_its_rendered_sequence_diagram() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let sys = spawn_system().await;
    let (status, fired) = sys.fire("/api/fireTcc").await;
    assert_eq!(
        (status, fired["status"].as_str()),
        (200, Some("succeed")),
        "{fired}"
    );
    let gid = fired["gid"].as_str().expect("a gid").to_owned();

    driver.wait_ready().await;
    let browser = driver.browser().await;
    let outcome = walk_through_the_page(&browser, &sys, &gid).await;
    conclude(browser, outcome, "admin-transaction.png").await;
}

/// Waits for a JavaScript dialog (alert, confirm, prompt) and returns its text.
async fn wait_dialog(browser: &Client) -> Step<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match browser.get_alert_text().await {
            Ok(text) => return Ok(text),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(format!("no dialog within 10 s: {e}")),
        }
    }
}

/// Force stop from the page of a coordinator with an admin token: the confirmation, the 401,
/// the prompt for the token, the retry with it.
async fn force_stop_through_the_page(
    browser: &Client,
    coordinator: &Spawned,
    gid: &str,
    token: &str,
) -> Step<()> {
    let url = coordinator.url(&format!("/admin#/transactions/{gid}"));
    step("opening the transaction", browser.goto(&url).await)?;
    wait_detail_loaded(browser, gid).await?;
    let status = text_content(browser, "#detail-status").await?;
    if status.as_deref() != Some("prepared") {
        return Err(format!("the detail shows status {status:?}, not prepared"));
    }
    let button = step(
        "the force stop button",
        browser.find(Locator::Css("#force-stop")).await,
    )?;
    step("clicking force stop", button.click().await)?;

    let confirmation = wait_dialog(browser).await?;
    if !confirmation.contains("WITHOUT calling any Confirm or Cancel") {
        return Err(format!("the confirmation does not warn: {confirmation:?}"));
    }
    step("confirming", browser.accept_alert().await)?;
    let prompt = wait_dialog(browser).await?;
    if !prompt.contains("admin token") {
        return Err(format!(
            "expected the prompt for the admin token, got {prompt:?}"
        ));
    }
    step("typing the token", browser.send_alert_text(token).await)?;
    step("accepting the prompt", browser.accept_alert().await)?;

    step(
        "the failed status",
        browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(
                "#detail-status .status[data-status=\"failed\"]",
            ))
            .await,
    )?;
    let message = text_content(browser, "#action-message")
        .await?
        .unwrap_or_default();
    if !message.contains("Force-stopped (was prepared)") {
        return Err(format!("the page says {message:?}"));
    }
    let kept = step(
        "reading sessionStorage",
        browser
            .execute(
                "return sessionStorage.getItem('tcc-coordinator-admin-token');",
                vec![],
            )
            .await,
    )?;
    if kept != json!(token) {
        return Err(format!("the token kept for the tab is {kept}"));
    }
    Ok(())
}

#[tokio::test]
async fn force_stop_on_the_page_asks_for_the_admin_token_and_fails_the_transaction() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let token = "page-admin-token";
    let coordinator = spawn_coordinator_with(TestDb::create("coordinator"), |settings| {
        settings.admin_token = Some(AdminToken::new(token));
    })
    .await;
    let http = reqwest::Client::new();
    let gid = format!("browser-{}", uuid::Uuid::new_v4().simple());
    let prepared = http
        .post(coordinator.url("/api/dtmsvr/prepare"))
        .json(&json!({ "gid": gid, "trans_type": "tcc" }))
        .send()
        .await
        .expect("prepare answers");
    assert_eq!(prepared.status().as_u16(), 200);

    driver.wait_ready().await;
    let browser = driver.browser().await;
    let outcome = force_stop_through_the_page(&browser, &coordinator, &gid, token).await;
    conclude(browser, outcome, "admin-force-stop.png").await;
    let record = wait_for_status(
        &http,
        &coordinator.dtm_url(),
        &gid,
        "failed",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        record["transaction"]["rollback_reason"],
        "force-stopped by an operator (was prepared)"
    );
}

/// The gid of the call `rm` holds (a `pause` fault), once it holds one.
async fn held_gid(http: &reqwest::Client, rm: &Spawned) -> String {
    for _ in 0..200 {
        let held: Value = http
            .get(rm.url("/api/paused"))
            .send()
            .await
            .expect("GET /api/paused")
            .json()
            .await
            .expect("JSON");
        if let Some(gid) = held[0]["gid"].as_str() {
            return gid.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never held a call", rm.name);
}

/// Polls `css`'s text until it contains `want`, without reloading the page.
async fn wait_text(browser: &Client, css: &str, want: &str, within: Duration) -> Step<()> {
    let deadline = Instant::now() + within;
    loop {
        let text = text_content(browser, css).await?.unwrap_or_default();
        if text.contains(want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{css} never showed {want:?} (last: {text:?})"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Finds `gid` through the list's gid-prefix filter, opens it while it is held `submitted`,
/// resumes it, and watches the same page reach `succeed` on its own.
async fn follow_a_live_transaction(browser: &Client, sys: &System, gid: &str) -> Step<()> {
    step(
        "opening /admin",
        browser.goto(&sys.coordinator.url("/admin")).await,
    )?;
    let field = step(
        "the gid prefix field",
        browser
            .find(Locator::Css("#filters input[name=gid_prefix]"))
            .await,
    )?;
    step("typing the prefix", field.send_keys("live-").await)?;
    let apply = step(
        "the Apply button",
        browser
            .find(Locator::Css("#filters button[type=submit]"))
            .await,
    )?;
    step("applying the filter", apply.click().await)?;
    // The list reloads: wait until it shows this transaction alone (another one exists).
    let ours = format!("a.gid-link[data-gid=\"{gid}\"]");
    let deadline = Instant::now() + Duration::from_secs(20);
    let link = loop {
        let rows = step(
            "the filtered list",
            browser
                .find_all(Locator::Css("#transactions tbody tr[data-gid]"))
                .await,
        )?;
        match browser.find(Locator::Css(&ours)).await.ok() {
            Some(link) if rows.len() == 1 => break link,
            _ if Instant::now() >= deadline => {
                return Err(format!(
                    "the filter shows {} rows, want only {gid}",
                    rows.len()
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    step("clicking the gid", link.click().await)?;
    wait_detail_loaded(browser, gid).await?;
    wait_text(
        browser,
        "#detail-status",
        "submitted",
        Duration::from_secs(10),
    )
    .await?;
    save_screenshot(browser, "admin-live-submitted.png").await?;

    let resume = sys.trans_in.url(&format!("/api/paused/resume?gid={gid}"));
    let resumed = step("resuming", sys.http.post(resume).send().await)?;
    if resumed.status() != 200 {
        return Err(format!("resume answered {}", resumed.status()));
    }
    // No reload: the page refreshes an unfinished transaction by itself.
    wait_text(
        browser,
        "#detail-status",
        "succeed",
        Duration::from_secs(20),
    )
    .await?;
    wait_text(browser, "#diagram svg", "succeed", Duration::from_secs(20)).await?;
    Ok(())
}

#[tokio::test]
async fn the_detail_of_an_unfinished_transaction_follows_it_live_until_it_is_final() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let sys = spawn_system().await;
    let (status, other) = sys.fire("/api/fireTcc").await;
    assert_eq!(status, 200, "{other}");
    let fire = sys.fire("/api/fireTcc?gid_prefix=live&request_timeout=60&trans_in_confirm=pause");
    let watch = async {
        let gid = held_gid(&sys.http, &sys.trans_in).await;
        driver.wait_ready().await;
        let browser = driver.browser().await;
        let outcome = follow_a_live_transaction(&browser, &sys, &gid).await;
        conclude(browser, outcome, "admin-live-succeed.png").await;
        gid
    };
    let ((status, answer), gid) = tokio::join!(fire, watch);
    assert_eq!(
        (status, answer["gid"].as_str()),
        (200, Some(gid.as_str())),
        "{answer}"
    );
}
