//! Full CRUD as two users through the gateway to the bundled task backend.

use serde_json::{json, Value};

use crate::common::*;

struct Client {
    addr: std::net::SocketAddr,
    auth: String,
}

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = vec![("Authorization", self.auth.as_str())];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        let response = request(self.addr, method, path, &headers, body.as_bytes()).await;
        let value = if response.body.is_empty() {
            Value::Null
        } else {
            response.json()
        };
        (response.status, value)
    }
}

#[tokio::test]
async fn two_users_each_see_only_their_own_tasks() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    tokio::spawn(authgate::demo_backend::serve(listener));
    let gateway = start_gateway(BASE_CONFIG, backend_addr).await;
    let alice = Client {
        addr: gateway.addr,
        auth: bearer(&token_for("alice")),
    };
    let bob = Client {
        addr: gateway.addr,
        auth: bearer(&token_for("bob")),
    };

    let (status, a1) = alice
        .call(
            "POST",
            "/api/alice/tasks",
            Some(json!({"title": "alice one"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(a1["user_id"], "alice");
    let (status, _) = alice
        .call(
            "POST",
            "/api/alice/tasks",
            Some(json!({"title": "alice two"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, b1) = bob
        .call("POST", "/api/bob/tasks", Some(json!({"title": "bob one"})))
        .await;
    assert_eq!(status, 201);

    let (status, list) = alice.call("GET", "/api/alice/tasks", None).await;
    assert_eq!(status, 200);
    let titles: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["alice one", "alice two"]);
    let (_, list) = bob.call("GET", "/api/bob/tasks", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let a1_path = format!("/api/alice/tasks/{}", a1["id"]);
    let (status, task) = alice.call("GET", &a1_path, None).await;
    assert_eq!((status, task["title"].as_str()), (200, Some("alice one")));
    let (status, task) = alice
        .call("PUT", &a1_path, Some(json!({"title": "alice one, edited"})))
        .await;
    assert_eq!(
        (status, task["title"].as_str()),
        (200, Some("alice one, edited"))
    );
    let (status, task) = alice
        .call("PATCH", &format!("{a1_path}/complete"), None)
        .await;
    assert_eq!((status, task["completed"].as_bool()), (200, Some(true)));

    // bob cannot read, change or delete alice's task: 403 at the gateway on alice's path...
    for method in ["GET", "PUT", "DELETE"] {
        let (status, body) = bob
            .call(method, &a1_path, Some(json!({"title": "pwned"})))
            .await;
        assert_eq!(status, 403, "{method}");
        assert_eq!(body["error"], "owner_mismatch");
    }
    // ...and the backend scopes ids to the user on his own path.
    let (status, _) = bob
        .call("GET", &format!("/api/bob/tasks/{}", a1["id"]), None)
        .await;
    assert_eq!(status, 404);

    let (status, _) = alice.call("DELETE", &a1_path, None).await;
    assert_eq!(status, 204);
    let (status, _) = alice.call("GET", &a1_path, None).await;
    assert_eq!(status, 404);
    let (_, list) = alice.call("GET", "/api/alice/tasks", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // bob's task is untouched.
    let (status, task) = bob
        .call("GET", &format!("/api/bob/tasks/{}", b1["id"]), None)
        .await;
    assert_eq!(
        (status, task["title"].as_str(), task["completed"].as_bool()),
        (200, Some("bob one"), Some(false))
    );
}
