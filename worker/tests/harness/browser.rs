//! A real browser for tests: Debian's headless Chromium, driven over WebDriver (thirtyfour)
//! through a ChromeDriver that the test starts on a free loopback port, with a fresh profile.
//! Helpers name what a user does (type, click, press a key) and what a test checks (a script's
//! value, waited for); [`Browser::screenshot`] saves PNGs into `target/screenshots/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use shared::testkit::eventually;
use thirtyfour::ChromeCapabilities;
use thirtyfour::prelude::*;
use uuid::Uuid;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// What Chromium needs to run headless here as root, without reaching for any other host.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// A phone's screen, in CSS pixels.
const PHONE: (u32, u32) = (390, 844);

/// The tallest a screenshot of a whole page gets, in CSS pixels.
const SCREENSHOT_MAX_HEIGHT: i64 = 2400;

/// How long a wait for the page lasts before the test fails.
pub const PAGE_WAIT_S: u64 = 20;

/// A Chromium session; [`Browser::quit`] ends it (ChromeDriver is killed when dropped).
pub struct Browser {
    driver: Option<WebDriver>,
    _chromedriver: tokio::process::Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with an empty profile; panics with what to
    /// install when either is missing.
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: apt-get install -y chromium chromium-driver"
        );
        let port = free_port();
        let chromedriver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver: apt-get install -y chromium chromium-driver");
        let server = format!("http://127.0.0.1:{port}");
        wait_until_serving(&server).await;
        let profile = std::env::temp_dir().join(format!("dashboard-test-{}", Uuid::now_v7()));
        let driver = WebDriver::new(&server, capabilities(&profile))
            .await
            .expect("a Chromium session");
        Browser {
            driver: Some(driver),
            _chromedriver: chromedriver,
            profile,
        }
    }

    fn driver(&self) -> &WebDriver {
        self.driver.as_ref().expect("the browser runs")
    }

    pub async fn goto(&self, url: &str) {
        self.driver().goto(url).await.expect("open the page");
    }

    /// Replaces the text of the field `css` with `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.element(css).await;
        field.clear().await.expect("clear the field");
        field.send_keys(text).await.expect("type");
    }

    /// Clicks the element `css`, once it is there.
    pub async fn click(&self, css: &str) {
        self.element(css).await.click().await.expect("click");
    }

    /// Presses `key` where the focus is, as the keyboard does.
    pub async fn press(&self, key: Key) {
        let chain = self.driver().action_chain().send_keys(key);
        chain.perform().await.expect("press a key");
    }

    /// The element `css`, waiting until it is on the page.
    pub async fn element(&self, css: &str) -> WebElement {
        eventually(PAGE_WAIT_S, css, || async {
            self.driver().find(By::Css(css)).await.ok()
        })
        .await
    }

    /// The value of `script` (a function body that `return`s), run in the page.
    pub async fn eval(&self, script: &str) -> Value {
        let result = self.driver().execute(script, Vec::new()).await;
        result.expect("run a script").json().clone()
    }

    /// The value an asynchronous `expression` (a promise) resolves to, in the page.
    pub async fn eval_promise(&self, expression: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1]; \
             Promise.resolve({expression}).then(done, (error) => done(String(error)));"
        );
        let result = self.driver().execute_async(script, Vec::new()).await;
        result.expect("run a script").json().clone()
    }

    /// Waits until the JavaScript `expression` is truthy in the page; returns its value.
    pub async fn wait_for(&self, what: &str, expression: &str) -> Value {
        let script = format!("return ({expression}) || null;");
        eventually(PAGE_WAIT_S, what, || async {
            let value = self.eval(&script).await;
            (!value.is_null()).then_some(value)
        })
        .await
    }

    /// Waits until the element `css` shows text containing `text`.
    pub async fn wait_for_text(&self, css: &str, text: &str) {
        let expression = format!(
            "[...document.querySelectorAll({css})].some((e) => e.textContent.includes({text}))",
            css = Value::from(css),
            text = Value::from(text),
        );
        self.wait_for(&format!("{css} to show {text:?}"), &expression)
            .await;
    }

    /// How many elements `css` show text containing `text`.
    pub async fn count_with_text(&self, css: &str, text: &str) -> u64 {
        let script = format!(
            "return [...document.querySelectorAll({css})].filter((e) => e.textContent.includes({text})).length;",
            css = Value::from(css),
            text = Value::from(text),
        );
        self.eval(&script).await.as_u64().expect("a count")
    }

    /// Sets the window's size, as a phone's screen or a desktop's window.
    pub async fn resize(&self, width: u32, height: u32) {
        let driver = self.driver();
        driver
            .set_window_rect(0, 0, width, height)
            .await
            .expect("resize");
    }

    /// Makes the window a phone's, 390x844, and waits until the page has that width.
    pub async fn phone_sized(&self) {
        self.resize(PHONE.0, PHONE.1).await;
        let narrow = format!("window.innerWidth <= {}", PHONE.0);
        self.wait_for("a phone-sized window", &narrow).await;
    }

    /// Whether the page is no wider than the window (nothing to scroll sideways).
    pub async fn fits_the_width(&self) -> bool {
        let script = "return document.documentElement.scrollWidth <= window.innerWidth;";
        self.eval(script).await == Value::Bool(true)
    }

    /// Saves the whole page as `target/screenshots/<name>.png`: the window is made as tall as
    /// the page (up to [`SCREENSHOT_MAX_HEIGHT`]) for the picture, then given its size back.
    pub async fn screenshot(&self, name: &str) {
        let folder = screenshots_folder();
        std::fs::create_dir_all(&folder).expect("the screenshots folder");
        let path = folder.join(format!("{name}.png"));
        let window = self
            .driver()
            .get_window_rect()
            .await
            .expect("the window's size");
        let page = self
            .eval("return document.documentElement.scrollHeight + (window.outerHeight - window.innerHeight);")
            .await
            .as_i64()
            .expect("the page's height");
        let tall = page.clamp(window.height, SCREENSHOT_MAX_HEIGHT);
        self.resize(window.width as u32, tall as u32).await;
        self.driver().screenshot(&path).await.expect("a screenshot");
        self.resize(window.width as u32, window.height as u32).await;
    }

    /// Makes the browser keep a timing entry of every request the page makes from now on (it
    /// keeps 250 by default), for [`Browser::requested_only_loopback`].
    pub async fn keep_every_request(&self) {
        self.eval("performance.setResourceTimingBufferSize(100000); return null;")
            .await;
    }

    /// Fails unless the page, and every request it made since it loaded (the browser's
    /// resource timing entries), went to a loopback address: nothing from a CDN or elsewhere.
    pub async fn requested_only_loopback(&self) {
        let script = "return [location.href, \
                      ...performance.getEntriesByType('resource').map((entry) => entry.name)] \
                      .map((url) => new URL(url).hostname);";
        let hosts = self.eval(script).await;
        let hosts = hosts.as_array().expect("host names");
        assert!(hosts.len() > 1, "the page made requests: {hosts:?}");
        for host in hosts {
            let host = host.as_str().unwrap_or("?");
            let loopback = host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback());
            assert!(loopback, "a request to {host}, not loopback: {hosts:?}");
        }
    }

    /// Ends the session and the browser.
    pub async fn quit(mut self) {
        if let Some(driver) = self.driver.take() {
            driver.quit().await.expect("quit the browser");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The workspace's `target/screenshots/`.
pub fn screenshots_folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

fn capabilities(profile: &std::path::Path) -> ChromeCapabilities {
    let mut capabilities = DesiredCapabilities::chrome();
    capabilities.set_binary(CHROMIUM).expect("binary");
    for flag in FLAGS {
        capabilities.add_arg(flag).expect("a flag");
    }
    let profile = format!("--user-data-dir={}", profile.display());
    capabilities.add_arg(&profile).expect("a flag");
    capabilities
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Waits until ChromeDriver answers `/status` as ready.
async fn wait_until_serving(server: &str) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let status = format!("{server}/status");
    eventually(PAGE_WAIT_S, "chromedriver to serve", || async {
        let response = client.get(&status).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        (body["value"]["ready"] == true).then_some(())
    })
    .await;
}
