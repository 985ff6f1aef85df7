//! Another user's resources get 403 and nothing reaches the backend.

use crate::common::*;

#[tokio::test]
async fn alice_on_bobs_paths_is_forbidden_for_every_method() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let cases = [
        ("GET", "/api/bob/tasks"),
        ("POST", "/api/bob/tasks"),
        ("GET", "/api/bob/tasks/1"),
        ("PUT", "/api/bob/tasks/1"),
        ("DELETE", "/api/bob/tasks/1"),
        ("PATCH", "/api/bob/tasks/1/complete"),
        ("HEAD", "/api/bob/tasks/1"),
        ("OPTIONS", "/api/bob/tasks/1"),
    ];
    for (method, path) in cases {
        let response = request(
            gateway.addr,
            method,
            path,
            &[("Authorization", &auth)],
            b"{}",
        )
        .await;
        assert_eq!(response.status, 403, "{method} {path}");
        if method != "HEAD" {
            assert_eq!(response.json()["error"], "owner_mismatch");
        }
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn owner_comparison_is_byte_for_byte() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    // Case, encoded look-alikes and trailing bytes are all different users.
    for path in [
        "/api/Alice/tasks",
        "/api/ALICE/tasks",
        "/api/alice%20/tasks",
        "/api/alic%C3%A9/tasks",
        "/api/alice.x/tasks",
    ] {
        let response = request(gateway.addr, "GET", path, &[("Authorization", &auth)], b"").await;
        assert_eq!(response.status, 403, "{path}");
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn encoded_owner_segment_matches_after_decoding_and_is_forwarded_as_sent() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let response = request(
        gateway.addr,
        "GET",
        "/api/%61lice/tasks",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    let received = backend.only();
    assert_eq!(received.target, "/api/%61lice/tasks");
    assert_eq!(received.header_values("x-user-id"), vec!["alice"]);
}

#[tokio::test]
async fn owner_query_parameters() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let queries = [
        "user_id=bob",
        "user_id=alice&user_id=bob",
        "user_id=bob&user_id=alice",
        "user%5Fid=bob",
        "x=1&user_id=",
        "user_id=alice%20",
    ];
    assert_queries_refused(&gateway, &auth, &queries, 403, "owner_mismatch").await;
    // Names that `qs`, PHP or Rails read as `user_id` without being spelled `user_id`: 400,
    // whatever they carry.
    let look_alikes = [
        "user_id[]=bob",
        "user_id[0]=bob",
        "user_id%5B%5D=bob",
        "user_id=alice&user_id[]=bob",
        "user.id=bob",
        "user+id=bob",
        "USER_ID=bob",
        "user[id=bob",
        "[user_id]=bob",
        "user_id]=bob",
        "!user_id=bob",
        "x.user_id=bob",
    ];
    assert_queries_refused(&gateway, &auth, &look_alikes, 400, "bad_target").await;
    // PHP ends a name at an encoded NUL: `user_id%00x` is `user_id` there.
    assert_queries_refused(
        &gateway,
        &auth,
        &["user_id%00=bob", "user_id%00x=bob"],
        400,
        "bad_target",
    )
    .await;
    assert_eq!(backend.count(), 0);
    let target = "/api/alice/tasks?user_id=alice&page=2&user_idx=bob&filter[user]=bob";
    let response = request(
        gateway.addr,
        "GET",
        target,
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(backend.only().target, target);
}

#[tokio::test]
async fn own_paths_pass_for_every_method() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("bob"));
    for (method, path) in [
        ("GET", "/api/bob/tasks/7"),
        ("PUT", "/api/bob/tasks/7"),
        ("DELETE", "/api/bob/tasks/7"),
        ("PATCH", "/api/bob/tasks/7/complete"),
    ] {
        let response = request(
            gateway.addr,
            method,
            path,
            &[("Authorization", &auth)],
            b"{}",
        )
        .await;
        assert_eq!(response.status, 200, "{method} {path}");
    }
    let received = backend.received();
    assert_eq!(received.len(), 4);
    for r in received {
        assert_eq!(r.header_values("x-user-id"), vec!["bob"]);
    }
}

/// `GET /api/alice/tasks?{query}` with `auth` gets `status` and `code` for every query.
async fn assert_queries_refused(
    gateway: &GatewayHandle,
    auth: &str,
    queries: &[&str],
    status: u16,
    code: &str,
) {
    for query in queries {
        let target = format!("/api/alice/tasks?{query}");
        let response = request(
            gateway.addr,
            "GET",
            &target,
            &[("Authorization", auth)],
            b"",
        )
        .await;
        assert_eq!(response.status, status, "{query}");
        assert_eq!(response.json()["error"], code, "{query}");
    }
}

/// PHP's `$_REQUEST`, Rails' `params`, Flask's `request.values` and Spring's `@RequestParam` read
/// form fields as query parameters: a form body gets the owner query rule, whole and checked
/// before anything is forwarded.
#[tokio::test]
async fn owner_fields_in_form_bodies() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let form = "application/x-www-form-urlencoded";
    let cases: [(&str, &str, u16, &str); 7] = [
        ("title=x&user_id=bob", form, 403, "owner_mismatch"),
        ("user_id=alice&user_id=bob", form, 403, "owner_mismatch"),
        ("user_id[]=bob", form, 400, "bad_target"),
        ("user.id=bob", form, 400, "bad_target"),
        ("user_id=bob%0A", form, 403, "owner_mismatch"),
        (
            "user_id=bob",
            "application/x-www-form-urlencoded, text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "user_id=bob",
            "text/plain; x=form-urlencoded",
            415,
            "unsupported_media_type",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let response = request(
            gateway.addr,
            "POST",
            "/api/alice/tasks",
            &[("Authorization", &auth), ("Content-Type", content_type)],
            body.as_bytes(),
        )
        .await;
        assert_eq!(response.status, status, "{body} as {content_type}");
        assert_eq!(response.json()["error"], code, "{body} as {content_type}");
    }
    // Rack (Rails) reads a POST body with no Content-Type as a form, however lenient it must be.
    for (body, status) in [
        ("user_id=bob", 403),
        ("x=%ZZ&user_id=bob", 403),
        ("{\"a\":1};user_id=bob", 403),
        ("user_id[]=bob", 400),
    ] {
        let response = request(
            gateway.addr,
            "POST",
            "/api/alice/tasks",
            &[("Authorization", &auth)],
            body.as_bytes(),
        )
        .await;
        assert_eq!(response.status, status, "untyped {body}");
    }
    // A streamed (chunked) or large untyped POST must say what it is.
    let token = token_for("alice");
    let chunked = format!(
        "POST /api/alice/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nb\r\nuser_id=bob\r\n0\r\n\r\n"
    );
    let response = send_raw(gateway.addr, chunked.as_bytes()).await;
    assert_eq!(response.status, 415);
    assert_eq!(response.json()["error"], "unsupported_media_type");
    assert_eq!(backend.count(), 0);
    // An untyped body that names no owner field passes, unread by anyone but the backend.
    let untyped = "{\"title\":\"x\",\n \"done\":false}";
    let response = request(
        gateway.addr,
        "POST",
        "/api/alice/tasks",
        &[("Authorization", &auth)],
        untyped.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(backend.only().body, untyped.as_bytes());
    // A textarea's line break (%0D%0A) is an ordinary form value.
    let body = "title=buy+milk&notes=a%0D%0Ab&user_id=alice";
    let response = request(
        gateway.addr,
        "POST",
        "/api/alice/tasks",
        &[
            ("Authorization", &auth),
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            ),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    let received = backend.received().pop().unwrap();
    assert_eq!(received.body, body.as_bytes(), "forwarded byte for byte");
    assert_eq!(received.header_values("x-user-id"), ["alice"]);
}

/// `multipart/form-data` fields are read as query parameters by the same frameworks; uploads are
/// large, so the body is scanned as it streams and a refusal keeps the body the backend gets
/// incomplete (the close delimiter never reaches it).
#[tokio::test]
async fn owner_fields_in_multipart_bodies() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let multipart = |parts: &[(&str, &[u8])]| {
        let mut body = Vec::new();
        for (name, content) in parts {
            body.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        body
    };
    let typed = "multipart/form-data; boundary=XyZ";
    // 3 MiB of upload before the field: streamed, not buffered, and still refused.
    let upload = vec![b'u'; 3 << 20];
    let cases: [(Vec<u8>, &str, u16, &str); 5] = [
        (
            multipart(&[("user_id", b"bob")]),
            typed,
            403,
            "owner_mismatch",
        ),
        (
            multipart(&[("file", &upload), ("user_id", b"bob")]),
            typed,
            403,
            "owner_mismatch",
        ),
        (
            multipart(&[("user_id[]", b"bob")]),
            typed,
            400,
            "bad_target",
        ),
        (
            b"--XyZ\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nbob".to_vec(),
            typed,
            400,
            "bad_request",
        ),
        (
            multipart(&[("user_id", b"alice")]),
            "multipart/form-data; boundary=XyZ; boundary=other",
            415,
            "unsupported_media_type",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let response = post_tasks(gateway.addr, &auth, content_type, &body).await;
        assert_eq!(response.status, status, "{content_type}");
        assert_eq!(response.json()["error"], code);
    }
    // Chunked, unterminated, and ended by trailers: the end is checked before the trailers go.
    let token = token_for("alice");
    let part = "--XyZ\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nbob";
    let chunked = format!(
        "POST /api/alice/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {typed}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{part}\r\n0\r\nX-Checksum: 1\r\n\r\n",
        part.len()
    );
    let response = send_raw(gateway.addr, chunked.as_bytes()).await;
    assert_eq!(response.status, 400);
    // Whatever reached the backend of those was cut short: no body with its close delimiter,
    // and no owner value that was not checked.
    assert!(backend
        .received()
        .iter()
        .all(|r| !r.body.windows(3).any(|w| w == b"bob")));
    assert!(backend
        .received()
        .iter()
        .all(|r| !r.body.ends_with(b"--XyZ--\r\n")));

    let good = multipart(&[
        ("title", b"buy milk"),
        ("file", &upload),
        ("user_id", b"alice"),
    ]);
    let response = post_tasks(gateway.addr, &auth, typed, &good).await;
    assert_eq!(response.status, 200);
    // An aborted request above may be recorded late, so the forwarded one is found by content.
    let received = backend.received();
    let forwarded = received
        .iter()
        .filter(|r| r.body == good)
        .collect::<Vec<_>>();
    assert_eq!(forwarded.len(), 1, "forwarded once, byte for byte");
    assert_eq!(forwarded[0].header_values("x-user-id"), ["alice"]);
}

/// A form body is read whole to check its fields, up to the form-scan limit (1 MiB), which is
/// below `max_body_bytes`: the refusal names that limit, not the general one, and the backend gets
/// nothing.
#[tokio::test]
async fn a_form_body_past_the_form_scan_limit_names_that_limit() {
    let (backend, gateway) = setup().await;
    let auth = bearer(&token_for("alice"));
    let mut body = b"title=".to_vec();
    body.resize((1 << 20) + 1, b'x');
    let response = request(
        gateway.addr,
        "POST",
        "/api/alice/tasks",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
    )
    .await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["error"], "body_too_large");
    let message = response.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("1 MiB (the form-scan limit"), "{message}");
    assert_eq!(backend.count(), 0);
}
