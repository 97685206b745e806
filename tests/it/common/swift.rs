//! A Swift helper on the single-node Swift of `scripts/test-services.sh`: a
//! unique container per test, and the few object calls the tests make,
//! logged in with TempAuth.

use std::collections::BTreeMap;

use super::env::test_env;
use super::unique_suffix;

pub struct Swift {
    agent: ureq::Agent,
    pub container: String,
    storage_url: String,
    token: String,
}

/// What a HEAD says, headers lowercased.
pub type Headers = BTreeMap<String, String>;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().new_agent()
}

/// Log in with TempAuth: (storage URL, token).
pub fn swift_login(auth_url: &str, user: &str, key: &str) -> (String, String) {
    let r = agent().get(auth_url).header("X-Auth-User", user).header("X-Auth-Key", key).call().unwrap();
    assert!(r.status().is_success(), "TempAuth login at {auth_url}: {}", r.status());
    let h = |n: &str| r.headers().get(n).unwrap().to_str().unwrap().to_owned();
    (h("x-storage-url"), h("x-auth-token"))
}

fn encode(key: &str) -> String {
    key.split('/')
        .map(|p| {
            p.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Swift {
    /// A new empty container.
    pub fn new() -> Swift {
        let env = test_env();
        let (storage_url, token) = swift_login(&env.swift_auth, &env.swift_user, &env.swift_key);
        Swift::create(storage_url, token)
    }

    /// A new empty container in the Keystone project's account, logged in
    /// with its application credential.
    pub fn new_keystone() -> Swift {
        let env = test_env();
        let body = serde_json::json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": env.keystone_app_id, "secret": env.keystone_app_secret}}}});
        let mut r = agent()
            .post(&format!("{}/auth/tokens", env.keystone_url))
            .header("Content-Type", "application/json")
            .send(serde_json::to_vec(&body).unwrap().as_slice())
            .unwrap();
        assert!(r.status().is_success(), "Keystone login: {}", r.status());
        let token = r.headers().get("x-subject-token").unwrap().to_str().unwrap().to_owned();
        let answer: serde_json::Value = serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
        let url = answer["token"]["catalog"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["type"] == "object-store")
            .and_then(|s| s["endpoints"].as_array().unwrap().iter().find(|e| e["interface"] == "public"))
            .and_then(|e| e["url"].as_str())
            .unwrap()
            .to_owned();
        Swift::create(url, token)
    }

    fn create(storage_url: String, token: String) -> Swift {
        let sw = Swift { agent: agent(), container: format!("mo-test-{}", unique_suffix()), storage_url, token };
        let r = sw.agent.put(&sw.url("")).header("X-Auth-Token", &sw.token).send_empty().unwrap();
        assert!(r.status().is_success(), "creating container {}: {}", sw.container, r.status());
        sw
    }

    /// The container's segments container (`<container>_segments`).
    pub fn segments(&self) -> Swift {
        Swift {
            agent: agent(),
            container: format!("{}_segments", self.container),
            storage_url: self.storage_url.clone(),
            token: self.token.clone(),
        }
    }

    fn url(&self, key: &str) -> String {
        match key {
            "" => format!("{}/{}", self.storage_url, self.container),
            k => format!("{}/{}/{}", self.storage_url, self.container, encode(k)),
        }
    }

    /// The environment `media-offload` logs in with (python-swiftclient's).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let env = test_env();
        vec![
            ("ST_AUTH", env.swift_auth.clone()),
            ("ST_USER", env.swift_user.clone()),
            ("ST_KEY", env.swift_key.clone()),
        ]
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut r = self.agent.get(&self.url(key)).header("X-Auth-Token", &self.token).call().unwrap();
        match r.status().as_u16() {
            404 => None,
            200 => Some(r.body_mut().with_config().limit(u64::MAX).read_to_vec().unwrap()),
            s => panic!("GET {key}: {s}"),
        }
    }

    pub fn head(&self, key: &str) -> Option<Headers> {
        let r = self.agent.head(&self.url(key)).header("X-Auth-Token", &self.token).call().unwrap();
        match r.status().as_u16() {
            404 => None,
            200 => Some(
                r.headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_lowercase(), v.to_str().unwrap_or_default().to_owned()))
                    .collect(),
            ),
            s => panic!("HEAD {key}: {s}"),
        }
    }

    /// Store `data` at `key` as another tool would (no metadata).
    pub fn put(&self, key: &str, data: &[u8]) {
        let r = self.agent.put(&self.url(key)).header("X-Auth-Token", &self.token).send(data).unwrap();
        assert!(r.status().is_success(), "PUT {key}: {}", r.status());
    }

    pub fn delete(&self, key: &str) {
        let r = self.agent.delete(&self.url(key)).header("X-Auth-Token", &self.token).call().unwrap();
        assert!(r.status().is_success() || r.status() == 404, "DELETE {key}: {}", r.status());
    }

    /// Every object's name, sorted (empty if the container does not exist).
    pub fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let marker = out.last().cloned().unwrap_or_default();
            let mut r = self
                .agent
                .get(&self.url(""))
                .query("format", "json")
                .query("marker", &marker)
                .header("X-Auth-Token", &self.token)
                .call()
                .unwrap();
            if r.status() == 404 {
                return out;
            }
            let page: Vec<serde_json::Value> = serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
            if page.is_empty() {
                return out;
            }
            out.extend(page.iter().map(|o| o["name"].as_str().unwrap().to_owned()));
        }
    }
}
