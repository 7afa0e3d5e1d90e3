//! A squadron API server on a loopback port, over a fresh database.

#![allow(dead_code)]

use std::sync::Arc;

use squadron_core::access::Role;
use squadron_store::projects::NewProject;
use squadron_store::testing::TestDb;
use squadron_web::{router, AppState, WebConfig};

pub struct Api {
    pub db: TestDb,
    pub base: String,
    pub http: reqwest::Client,
    /// Token of a user with the submitter role in group `g`.
    pub submitter: String,
    /// Token of a user with the member role in group `g`.
    pub member: String,
    /// Token of a superuser.
    pub admin: String,
}

impl Api {
    /// Serves the API over `db` with `config`; group `g` has a public
    /// project `p` and a private project `private`.
    pub async fn start(db: TestDb, config: WebConfig) -> Api {
        let s = &db.store;
        let group = s.create_group("g", None).await.unwrap();
        for (slug, is_public) in [("p", true), ("private", false)] {
            s.create_project(NewProject { group_id: group.id, slug, is_public, ..Default::default() }).await.unwrap();
        }
        let mut tokens = Vec::new();
        for (name, role, superuser) in
            [("sub", Some(Role::Submitter), false), ("mem", Some(Role::Member), false), ("root", None, true)]
        {
            let user = s.create_user(name, "", superuser).await.unwrap();
            if let Some(role) = role {
                s.set_member(group.id, user.id, role).await.unwrap();
            }
            tokens.push(s.token_for(user.id, false).await.unwrap());
        }
        let backends = squadron_ci::Backends::new(db.scratch.dir.path());
        let state =
            AppState { config: Arc::new(config), ..AppState::new(db.store.clone(), db.blobs.clone(), backends) };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
        let [submitter, member, admin] = <[String; 3]>::try_from(tokens).unwrap();
        Api { db, base, http: reqwest::Client::new(), submitter, member, admin }
    }

    pub async fn new(db: TestDb) -> Api {
        Self::start(db, WebConfig::default()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs a multipart form of text fields and files (name, file name, content).
    pub async fn post_multipart(
        &self,
        path: &str,
        token: Option<&str>,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> (u16, String) {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        for (k, name, content) in files {
            form =
                form.part(k.to_string(), reqwest::multipart::Part::bytes(content.to_vec()).file_name(name.to_string()));
        }
        let mut req = self.http.post(self.url(path)).multipart(form);
        if let Some(t) = token {
            req = req.header("Authorization", format!("token {t}"));
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// POSTs an urlencoded form.
    pub async fn post_form(&self, path: &str, token: Option<&str>, fields: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.http.post(self.url(path)).form(fields);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Token {t}"));
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Sends a request without a body; returns the status and the JSON
    /// answer.
    pub async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        self.send(method, path, token, None).await
    }

    /// GETs `path`; returns the status, the content type and the body.
    pub async fn get_text(&self, path: &str) -> (u16, String, String) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        (status, content_type, resp.text().await.unwrap())
    }

    /// Sends a JSON body; returns the status and the JSON answer (null
    /// when empty).
    pub async fn call_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.send(method, path, token, Some(body)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(t) = token {
            req = req.header("Authorization", format!("Token {t}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if text.is_empty() {
            return (status, serde_json::Value::Null);
        }
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")))
    }

    /// Submits `tests` (as the superuser) as a run of `build` on `x86` in
    /// project `project` of group `g`; returns the build's id.
    pub async fn submit_tests(&self, project: &str, build: &str, tests: &str) -> i64 {
        let path = format!("/api/submit/g/{project}/{build}/x86");
        let (status, body) = self.post_form(&path, Some(&self.admin), &[("tests", tests)]).await;
        assert_eq!(status, 201, "{body}");
        self.db.scalar(&format!("SELECT build_id FROM testruns WHERE id = {body}")).await
    }

    /// The `detail` of a JSON error body.
    pub fn detail(body: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON error body: {body}"));
        v["detail"].as_str().unwrap_or_else(|| panic!("detail in {body}")).to_string()
    }
}
