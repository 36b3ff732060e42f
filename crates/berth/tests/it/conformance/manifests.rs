//! "Pushing Manifests" and "Pulling manifests", for every manifest kind berth stores.

use super::*;

/// PUTs `bytes` as `media_type` under `tag`, then checks GET and HEAD by tag and by digest:
/// exact bytes, `Content-Type` equal to the pushed type, `Docker-Content-Digest`,
/// `Content-Length`. Returns the digest.
async fn round_trip(s: &Server, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let res = s.put_manifest(repo, tag, media_type, bytes).await;
    assert_eq!(
        res.status(),
        201,
        "PUT {media_type}: {}",
        res.text().await.unwrap_or_default()
    );
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    let loc = location(&res);
    for reference in [tag, digest.as_str(), loc.as_str()] {
        let path = if reference.starts_with('/') {
            reference.to_owned()
        } else {
            format!("/v2/{repo}/manifests/{reference}")
        };
        let res = s
            .req(Method::GET, &path)
            .header("accept", media_type)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "GET {path}");
        assert_eq!(
            header(&res, "content-type").as_deref(),
            Some(media_type),
            "GET {path}"
        );
        assert_eq!(
            header(&res, "docker-content-digest").as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(
            header(&res, "content-length").as_deref(),
            Some(bytes.len().to_string().as_str())
        );
        assert!(
            res.bytes().await.unwrap().as_ref() == bytes,
            "GET {path}: exact bytes"
        );

        let res = s
            .req(Method::HEAD, &path)
            .header("accept", media_type)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "HEAD {path}");
        assert_eq!(header(&res, "content-type").as_deref(), Some(media_type));
        assert_eq!(
            header(&res, "docker-content-digest").as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(
            header(&res, "content-length").as_deref(),
            Some(bytes.len().to_string().as_str()),
            "HEAD {path}"
        );
        assert!(res.bytes().await.unwrap().is_empty(), "HEAD has no body");
    }
    digest
}

/// An OCI image manifest, pretty-printed with a trailing newline so that any
/// re-serialization by the registry would show: stored and served byte for byte.
#[tokio::test]
async fn oci_image_manifest_round_trip() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 1).await;
    let v: Value =
        serde_json::from_slice(&p.oci(Some(json!({"annotations": {"z": "1", "a": "2"}})))).unwrap();
    let mut bytes = serde_json::to_vec_pretty(&v).unwrap();
    bytes.extend_from_slice(b"\n");
    round_trip(&s, "team/app", "v1", OCI_MANIFEST, &bytes).await;
}

/// An OCI image index over two image manifests.
#[tokio::test]
async fn oci_index_round_trip() {
    let s = Server::start();
    let (d1, m1) = push_manifest(&s, "team/app", "amd64", 1).await;
    let (d2, m2) = push_manifest(&s, "team/app", "arm64", 2).await;
    let idx = index(
        OCI_INDEX,
        &[(OCI_MANIFEST, &d1, m1.len()), (OCI_MANIFEST, &d2, m2.len())],
        None,
    );
    round_trip(&s, "team/app", "multi", OCI_INDEX, &idx).await;
}

/// A Docker schema 2 image manifest.
#[tokio::test]
async fn docker_manifest_round_trip() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 3).await;
    round_trip(&s, "team/app", "docker", DOCKER_MANIFEST, &p.docker()).await;
}

/// A Docker manifest list over two Docker manifests.
#[tokio::test]
async fn docker_manifest_list_round_trip() {
    let s = Server::start();
    let mut children = Vec::new();
    for seed in [4, 5] {
        let p = push_parts(&s, "team/app", seed).await;
        let m = p.docker();
        let d = round_trip(&s, "team/app", &format!("arch{seed}"), DOCKER_MANIFEST, &m).await;
        children.push((d, m.len()));
    }
    let list = index(
        DOCKER_LIST,
        &[
            (DOCKER_MANIFEST, &children[0].0, children[0].1),
            (DOCKER_MANIFEST, &children[1].0, children[1].1),
        ],
        None,
    );
    round_trip(&s, "team/app", "multi", DOCKER_LIST, &list).await;
}

/// An OCI artifact: `artifactType`, config of media type `application/vnd.oci.empty.v1+json`
/// with the empty blob `{}`.
#[tokio::test]
async fn oci_artifact_round_trip() {
    let s = Server::start();
    push_empty_config(&s, "team/app").await;
    let data = b"{\"sbom\":true}";
    let l = s.push_blob("team/app", data).await;
    let m = artifact(
        Some("application/vnd.example.sbom.v1"),
        (&l, data.len()),
        None,
        None,
    );
    round_trip(&s, "team/app", "sbom", OCI_MANIFEST, &m).await;
}

/// A manifest PUT by tag is 201 with a `Location` that pulls it and the digest of the bytes.
#[tokio::test]
async fn put_by_tag_answers_location_and_digest() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 6).await;
    let m = p.oci(None);
    let res = s.put_manifest("team/app", "latest", OCI_MANIFEST, &m).await;
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "docker-content-digest"), Some(sha256(&m)));
    let res = get(&s, &location(&res)).await;
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap().as_ref() == m.as_slice());
}

/// A manifest PUT by digest is 201, readable by digest, and creates no tag.
#[tokio::test]
async fn put_by_digest() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 7).await;
    let m = p.oci(None);
    let d = sha256(&m);
    let res = s.put_manifest("team/app", &d, OCI_MANIFEST, &m).await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    let res = get(&s, &format!("/v2/team/app/manifests/{d}")).await;
    assert_eq!(res.status(), 200);
    let tags: Value = get(&s, "/v2/team/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!([]));
}

/// A PUT by digest whose body has another digest is 400 `DIGEST_INVALID`; nothing is stored.
#[tokio::test]
async fn put_by_wrong_digest_is_400() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 8).await;
    let m = p.oci(None);
    let wrong = sha256(b"something else");
    expect_error(
        s.put_manifest("team/app", &wrong, OCI_MANIFEST, &m).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    for d in [wrong, sha256(&m)] {
        expect_error(
            get(&s, &format!("/v2/team/app/manifests/{d}")).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
}

/// A manifest referencing a blob the repository does not hold is 400
/// `MANIFEST_BLOB_UNKNOWN` (missing config, missing layer), and is not stored.
#[tokio::test]
async fn manifest_with_missing_blob_is_400_manifest_blob_unknown() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 9).await;
    let missing_layer = oci_manifest(&p.config, p.config_bytes.len(), &[(ABSENT, 10)], None);
    let missing_config = oci_manifest(ABSENT, 10, &[(&p.layer, p.layer_bytes.len())], None);
    for m in [missing_layer, missing_config] {
        let res = s.put_manifest("team/app", "v1", OCI_MANIFEST, &m).await;
        expect_error(res, 400, "MANIFEST_BLOB_UNKNOWN").await;
        expect_error(
            get(&s, &format!("/v2/team/app/manifests/{}", sha256(&m))).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    expect_error(
        get(&s, "/v2/team/app/manifests/v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

/// An index referencing a child manifest the repository does not hold is 400
/// `MANIFEST_BLOB_UNKNOWN`, for OCI indexes and Docker manifest lists.
#[tokio::test]
async fn index_with_missing_child_is_400_manifest_blob_unknown() {
    let s = Server::start();
    let (d1, m1) = push_manifest(&s, "team/app", "present", 10).await;
    for (index_type, child_type) in [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)] {
        let idx = index(
            index_type,
            &[(child_type, &d1, m1.len()), (child_type, ABSENT, 500)],
            None,
        );
        let res = s.put_manifest("team/app", "multi", index_type, &idx).await;
        expect_error(res, 400, "MANIFEST_BLOB_UNKNOWN").await;
    }
    expect_error(
        get(&s, "/v2/team/app/manifests/multi").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

/// Bodies that are not valid manifests are 400 `MANIFEST_INVALID`.
#[tokio::test]
async fn invalid_manifests_are_400_manifest_invalid() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 11).await;
    let good: Value = serde_json::from_slice(&p.oci(None)).unwrap();
    let mut no_config = good.clone();
    no_config.as_object_mut().unwrap().remove("config");
    let mut bad_digest = good.clone();
    bad_digest["layers"][0]["digest"] = "sha256:xyz".into();
    let mut bad_size = good.clone();
    bad_size["layers"][0]["size"] = json!(-1);
    let mut bad_schema = good.clone();
    bad_schema["schemaVersion"] = json!(3);
    let mut layers_not_array = good.clone();
    layers_not_array["layers"] = json!({"a": 1});
    for body in [
        b"not json at all".to_vec(),
        b"{\"schemaVersion\":2,".to_vec(),
        b"[]".to_vec(),
        Vec::new(),
        serde_json::to_vec(&no_config).unwrap(),
        serde_json::to_vec(&bad_digest).unwrap(),
        serde_json::to_vec(&bad_size).unwrap(),
        serde_json::to_vec(&bad_schema).unwrap(),
        serde_json::to_vec(&layers_not_array).unwrap(),
    ] {
        let res = s.put_manifest("team/app", "v1", OCI_MANIFEST, &body).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(res.status(), 400, "{text}");
        expect_error(res, 400, "MANIFEST_INVALID").await;
    }
}

/// A `Content-Type` that disagrees with the manifest's `mediaType` is 400 `MANIFEST_INVALID`.
#[tokio::test]
async fn content_type_media_type_mismatch_is_400() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 12).await;
    for ct in [OCI_INDEX, DOCKER_MANIFEST] {
        let res = s.put_manifest("team/app", "v1", ct, &p.oci(None)).await;
        expect_error(res, 400, "MANIFEST_INVALID").await;
    }
    let res = s
        .put_manifest("team/app", "v1", OCI_MANIFEST, &p.docker())
        .await;
    expect_error(res, 400, "MANIFEST_INVALID").await;
}

/// The registry SHOULD ignore `Content-Type` parameters and SHOULD NOT send any back.
#[tokio::test]
async fn content_type_parameters_are_ignored() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 13).await;
    let m = p.oci(None);
    let res = s
        .put_manifest(
            "team/app",
            "v1",
            &format!("{OCI_MANIFEST}; charset=utf-8"),
            &m,
        )
        .await;
    assert_eq!(res.status(), 201);
    let res = get(&s, "/v2/team/app/manifests/v1").await;
    assert_eq!(header(&res, "content-type").as_deref(), Some(OCI_MANIFEST));
}

/// Without a `Content-Type`, the manifest's own `mediaType` decides (and is served back).
#[tokio::test]
async fn missing_content_type_uses_media_type_field() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 14).await;
    let m = p.docker();
    let res = s
        .req(Method::PUT, "/v2/team/app/manifests/v1")
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = get(&s, "/v2/team/app/manifests/v1").await;
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some(DOCKER_MANIFEST)
    );
}

/// Docker schema 1 manifests are refused with `UNSUPPORTED` (by Content-Type or by body).
#[tokio::test]
async fn schema1_is_unsupported() {
    let s = Server::start();
    let body = br#"{"schemaVersion":1,"name":"team/app","tag":"v1","architecture":"amd64","fsLayers":[],"history":[]}"#;
    for ct in [
        DOCKER_SCHEMA1_SIGNED,
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/json",
    ] {
        let res = s.put_manifest("team/app", "v1", ct, body).await;
        let status = res.status().as_u16();
        assert!((400..500).contains(&status), "{ct}: {status}");
        expect_error(res, status, "UNSUPPORTED").await;
    }
    expect_error(
        get(&s, "/v2/team/app/manifests/v1").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

/// A manifest over the 4 MiB limit is 413, whether its length is declared up front or only
/// discovered while streaming a chunked body.
#[tokio::test]
async fn manifest_over_limit_is_413() {
    let s = Server::start();
    s.push_blob("team/app", b"x").await;
    const LIMIT: usize = 4 * 1024 * 1024;

    // Declared: the registry can answer from the headers alone.
    let head = format!(
        "PUT /v2/team/app/manifests/big HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.addr,
        LIMIT + 1
    );
    let res = raw_request(&s, head.as_bytes()).await;
    assert_eq!(res.status, 413);
    assert!(
        res.header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    assert_eq!(res.error_code(), "MANIFEST_INVALID");

    // Streamed: no Content-Length, the body just keeps coming.
    let big = vec![b' '; LIMIT + 4096];
    let res = s
        .req(Method::PUT, "/v2/team/app/manifests/big")
        .header("content-type", OCI_MANIFEST)
        .body(streamed(&big, 256 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413, "streamed manifest over the limit");
    expect_error(
        get(&s, "/v2/team/app/manifests/big").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

/// "Client and registry implementations SHOULD expect to be able to support manifest pushes
/// of at least 4 megabytes": a valid 4,000,000-byte manifest is accepted and served intact.
#[tokio::test]
async fn four_megabyte_manifest_is_accepted() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 15).await;
    let base = p.oci(Some(json!({"annotations": {"pad": ""}})));
    let pad = "p".repeat(4_000_000 - base.len());
    let m = p.oci(Some(json!({"annotations": {"pad": pad}})));
    assert_eq!(m.len(), 4_000_000);
    round_trip(&s, "team/app", "big", OCI_MANIFEST, &m).await;
}

/// A descriptor whose `size` does not match the stored blob is 400 `MANIFEST_INVALID`.
#[tokio::test]
async fn descriptor_size_mismatch_is_400() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 16).await;
    for (config_len, layer_len) in [
        (p.config_bytes.len(), p.layer_bytes.len() + 1),
        (p.config_bytes.len() - 1, p.layer_bytes.len()),
    ] {
        let m = oci_manifest(&p.config, config_len, &[(&p.layer, layer_len)], None);
        expect_error(
            s.put_manifest("team/app", "v1", OCI_MANIFEST, &m).await,
            400,
            "MANIFEST_INVALID",
        )
        .await;
    }
}

/// An unknown tag or digest is 404 `MANIFEST_UNKNOWN` (GET and HEAD).
#[tokio::test]
async fn unknown_manifest_is_404_manifest_unknown() {
    let s = Server::start();
    push_manifest(&s, "team/app", "v1", 17).await;
    for r in ["v2", ABSENT] {
        let path = format!("/v2/team/app/manifests/{r}");
        expect_error(get(&s, &path).await, 404, "MANIFEST_UNKNOWN").await;
        assert_eq!(head(&s, &path).await.status(), 404);
    }
}

/// "An attempt to pull a nonexistent repository MUST return response code 404": with
/// `NAME_UNKNOWN`.
#[tokio::test]
async fn manifest_in_unknown_repository_is_404_name_unknown() {
    let s = Server::start();
    push_manifest(&s, "team/app", "v1", 18).await;
    for r in ["v1", ABSENT] {
        let path = format!("/v2/team/other/manifests/{r}");
        expect_error(get(&s, &path).await, 404, "NAME_UNKNOWN").await;
        assert_eq!(head(&s, &path).await.status(), 404);
    }
}

/// A manifest with a `subject` is 201 with `OCI-Subject: <subject digest>`, also when the
/// subject does not exist (yet) — referrers may be pushed before their subject.
#[tokio::test]
async fn subject_is_acknowledged_even_when_missing() {
    let s = Server::start();
    let (subject, sm) = push_manifest(&s, "team/app", "v1", 19).await;
    push_empty_config(&s, "team/app").await;
    let l = s.push_blob("team/app", b"sig").await;
    for (sd, sn) in [(subject.as_str(), sm.len()), (ABSENT, 1234)] {
        let m = artifact(
            Some("application/vnd.example.sig"),
            (&l, 3),
            Some((sd, sn)),
            None,
        );
        let res = s
            .put_manifest("team/app", &sha256(&m), OCI_MANIFEST, &m)
            .await;
        assert_eq!(
            res.status(),
            201,
            "{}",
            res.text().await.unwrap_or_default()
        );
        assert_eq!(header(&res, "oci-subject").as_deref(), Some(sd));
        assert_eq!(get(&s, &location(&res)).await.status(), 200);
    }
    // Without a subject there is no OCI-Subject header.
    let res = s.put_manifest("team/app", "v1", OCI_MANIFEST, &sm).await;
    assert_eq!(res.status(), 201);
    assert!(header(&res, "oci-subject").is_none());
}

/// `PUT /v2/<name>/manifests/<digest>?tag=a&tag=b` is 201 with `OCI-Tag` listing each tag;
/// every tag then pulls the manifest.
#[tokio::test]
async fn multiple_tags_in_one_push() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 20).await;
    let m = p.oci(None);
    let d = sha256(&m);
    let res = s
        .put_manifest("team/app", &format!("{d}?tag=a&tag=b"), OCI_MANIFEST, &m)
        .await;
    assert_eq!(res.status(), 201);
    let mut tags = header_list(&res, "oci-tag");
    tags.sort();
    assert_eq!(tags, ["a", "b"]);
    for t in ["a", "b"] {
        let res = get(&s, &format!("/v2/team/app/manifests/{t}")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            header(&res, "docker-content-digest").as_deref(),
            Some(d.as_str())
        );
    }
    // The registry SHOULD support at least 10 tags per request.
    let names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let q: Vec<String> = names.iter().map(|t| format!("tag={t}")).collect();
    let res = s
        .req(
            Method::PUT,
            &format!("/v2/team/app/manifests/{d}?{}", q.join("&")),
        )
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut got = header_list(&res, "oci-tag");
    got.sort();
    assert_eq!(got, names);
    let list: Value = get(&s, "/v2/team/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["tags"].as_array().unwrap().len(), 12);
}

/// Far too many `tag` parameters MAY be refused with 414 (berth: over 100); nothing is tagged.
#[tokio::test]
async fn too_many_tags_is_414() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 21).await;
    let m = p.oci(None);
    let q: Vec<String> = (0..101).map(|i| format!("tag=t{i}")).collect();
    let res = s
        .req(
            Method::PUT,
            &format!("/v2/team/app/manifests/{}?{}", sha256(&m), q.join("&")),
        )
        .header("content-type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 414);
    expect_error(
        get(&s, "/v2/team/app/manifests/t0").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

/// Re-pushing a tag moves it; the old manifest stays readable by digest.
#[tokio::test]
async fn tag_moves_to_the_new_manifest() {
    let s = Server::start();
    let (d1, _) = push_manifest(&s, "team/app", "latest", 22).await;
    let (d2, _) = push_manifest(&s, "team/app", "latest", 23).await;
    assert_ne!(d1, d2);
    let res = get(&s, "/v2/team/app/manifests/latest").await;
    assert_eq!(header(&res, "docker-content-digest"), Some(d2));
    assert_eq!(
        get(&s, &format!("/v2/team/app/manifests/{d1}"))
            .await
            .status(),
        200
    );
}

/// Pushing the same manifest again is idempotent.
#[tokio::test]
async fn same_manifest_pushed_twice() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 24).await;
    let m = p.oci(None);
    for _ in 0..2 {
        assert_eq!(
            s.put_manifest("team/app", "v1", OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
    }
    let res = get(&s, "/v2/team/app/manifests/v1").await;
    assert!(res.bytes().await.unwrap().as_ref() == m.as_slice());
}

/// Manifests get an `ETag`; a matching `If-None-Match` is 304.
#[tokio::test]
async fn manifest_etag_and_if_none_match_304() {
    let s = Server::start();
    push_manifest(&s, "team/app", "v1", 25).await;
    let res = get(&s, "/v2/team/app/manifests/v1").await;
    let etag = header(&res, "etag").expect("ETag");
    let res = s
        .req(Method::GET, "/v2/team/app/manifests/v1")
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
}
