//! "Error Codes": every error is `{"errors":[{"code","message","detail"}]}` with the spec's
//! code and the status the endpoint table gives it.

use super::*;

/// One request per error code berth produces, each checked for status, JSON shape and code.
#[tokio::test]
async fn every_error_code_has_the_spec_body() {
    let s = Server::start();
    let (d, m) = push_manifest(&s, "team/app", "v1", 1).await;
    let loc = start_upload(&s, "team/app").await;
    assert_eq!(patch_at(&s, &loc, 0, b"0123456789").await.status(), 202);

    let cases: Vec<(Response, u16, &str)> = vec![
        (
            get(&s, &format!("/v2/team/app/blobs/{ABSENT}")).await,
            404,
            "BLOB_UNKNOWN",
        ),
        (
            s.req(Method::PATCH, &loc)
                .header("content-range", "x-y")
                .body(b"abc".to_vec())
                .send()
                .await
                .unwrap(),
            400,
            "BLOB_UPLOAD_INVALID",
        ),
        (
            get(
                &s,
                "/v2/team/app/blobs/uploads/6f1d3c2e-8a1b-4c3d-9e8f-0a1b2c3d4e5f",
            )
            .await,
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            get(&s, "/v2/team/app/blobs/sha256:123").await,
            400,
            "DIGEST_INVALID",
        ),
        (
            s.put_manifest(
                "team/app",
                "v2",
                OCI_INDEX,
                &index(OCI_INDEX, &[(OCI_MANIFEST, ABSENT, 10)], None),
            )
            .await,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        (
            s.put_manifest("team/app", "v2", OCI_MANIFEST, b"{").await,
            400,
            "MANIFEST_INVALID",
        ),
        (
            get(&s, "/v2/team/app/manifests/v2").await,
            404,
            "MANIFEST_UNKNOWN",
        ),
        (get(&s, "/v2/Team/app/tags/list").await, 400, "NAME_INVALID"),
        (
            get(&s, "/v2/team/none/tags/list").await,
            404,
            "NAME_UNKNOWN",
        ),
        (
            patch(&s, &loc, b"abc", Some((10, 19))).await,
            400,
            "SIZE_INVALID",
        ),
        (
            s.req(Method::PATCH, &format!("/v2/team/app/manifests/{d}"))
                .body(m.clone())
                .send()
                .await
                .unwrap(),
            405,
            "UNSUPPORTED",
        ),
    ];
    for (res, status, code) in cases {
        expect_error(res, status, code).await;
    }
}

/// Methods an endpoint does not support are 405 `UNSUPPORTED`; paths that are no endpoint
/// are 404 with a JSON error body.
#[tokio::test]
async fn unsupported_methods_and_unknown_paths() {
    let s = Server::start();
    let d = s.push_blob("team/app", b"x").await;
    for (method, path) in [
        (Method::POST, format!("/v2/team/app/blobs/{d}")),
        (Method::PUT, format!("/v2/team/app/blobs/{d}")),
        (Method::DELETE, "/v2/_catalog".to_owned()),
        (Method::POST, "/v2/team/app/tags/list".to_owned()),
        (Method::DELETE, "/v2/".to_owned()),
        (Method::GET, "/v2/team/app/blobs/uploads/".to_owned()),
    ] {
        let res = s.req(method.clone(), &path).send().await.unwrap();
        expect_error(res, 405, "UNSUPPORTED").await;
    }
    let res = get(&s, "/v2/team/app/nothing").await;
    assert_eq!(res.status(), 404);
    check_error_body(&res.json().await.unwrap());
}

/// Error messages are non-empty and tell the client something.
#[tokio::test]
async fn error_messages_are_human_readable() {
    let s = Server::start();
    let body = expect_error(
        get(&s, "/v2/team/app/manifests/v1").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("team/app"),
        "message names the repository: {msg}"
    );
}
