//! "Listing Referrers": `GET /v2/<name>/referrers/<digest>`.

use reqwest::header::HeaderMap;

use super::*;

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG: &str = "application/vnd.example.signature.v1";
const CUSTOM_CONFIG: &str = "application/vnd.example.config.v1+json";

/// GETs a referrers list: checks 200, `Content-Type`, the index shape; returns the headers
/// and the descriptors.
async fn referrers(s: &Server, path: &str) -> (HeaderMap, Vec<Value>) {
    let res = get(s, path).await;
    assert_eq!(res.status(), 200, "GET {path}");
    assert_eq!(header(&res, "content-type").as_deref(), Some(OCI_INDEX));
    let headers = res.headers().clone();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    let list = body["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests must be a list: {body}"))
        .clone();
    (headers, list)
}

fn find<'a>(list: &'a [Value], digest: &str) -> &'a Value {
    list.iter()
        .find(|d| d["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} missing from referrers {list:?}"))
}

/// With no referrers the answer is still 200: an empty OCI index (never 404), also for a
/// subject that does not exist and in a repository that does not.
#[tokio::test]
async fn no_referrers_is_an_empty_index() {
    let s = Server::start();
    let (d, _) = push_manifest(&s, "team/app", "v1", 1).await;
    for path in [
        format!("/v2/team/app/referrers/{d}"),
        format!("/v2/team/app/referrers/{ABSENT}"),
        format!("/v2/team/unknown/referrers/{d}"),
    ] {
        let (headers, list) = referrers(&s, &path).await;
        assert!(list.is_empty());
        assert!(headers.get("oci-filters-applied").is_none());
    }
}

/// Every manifest whose `subject` is the digest is listed with `mediaType`, `digest`, `size`,
/// `artifactType` (the manifest's, else its config `mediaType`; omitted for an index without
/// one) and its annotations. Others are not.
#[tokio::test]
async fn referrers_are_listed_with_artifact_type_and_annotations() {
    let s = Server::start();
    let (subject, sm) = push_manifest(&s, "team/app", "v1", 2).await;
    let (unrelated, um) = push_manifest(&s, "team/app", "v2", 3).await;
    push_empty_config(&s, "team/app").await;
    let data = s.push_blob("team/app", b"sbom-data").await;
    let sub = Some((subject.as_str(), sm.len()));

    // An artifact with artifactType and annotations.
    let sbom = artifact(
        Some(SBOM),
        (&data, 9),
        sub,
        Some(
            json!({"org.example.sbom.format": "json", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"}),
        ),
    );
    // An image manifest without artifactType: its config mediaType stands in.
    let cfg = s.push_blob("team/app", b"{\"custom\":1}").await;
    let typed_by_config = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CUSTOM_CONFIG, "digest": cfg, "size": 12},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": sm.len()},
    }))
    .unwrap();
    // An index with a subject, without artifactType, with annotations.
    let idx = index(
        OCI_INDEX,
        &[(OCI_MANIFEST, &unrelated, um.len())],
        Some(json!({
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": sm.len()},
            "annotations": {"org.example.kind": "bundle"},
        })),
    );
    // A referrer of another subject.
    let other = artifact(Some(SIG), (&data, 9), Some((&unrelated, um.len())), None);

    for (m, ct) in [
        (&sbom, OCI_MANIFEST),
        (&typed_by_config, OCI_MANIFEST),
        (&idx, OCI_INDEX),
        (&other, OCI_MANIFEST),
    ] {
        let res = s.put_manifest("team/app", &sha256(m), ct, m).await;
        assert_eq!(
            res.status(),
            201,
            "{}",
            res.text().await.unwrap_or_default()
        );
    }

    let (_, list) = referrers(&s, &format!("/v2/team/app/referrers/{subject}")).await;
    assert_eq!(list.len(), 3, "{list:?}");

    let d = find(&list, &sha256(&sbom));
    assert_eq!(d["mediaType"], OCI_MANIFEST);
    assert_eq!(d["size"], sbom.len());
    assert_eq!(d["artifactType"], SBOM);
    assert_eq!(d["annotations"]["org.example.sbom.format"], "json");
    assert_eq!(
        d["annotations"]["org.opencontainers.image.created"],
        "2024-01-01T00:00:00Z"
    );

    let d = find(&list, &sha256(&typed_by_config));
    assert_eq!(d["artifactType"], CUSTOM_CONFIG);
    assert_eq!(d["size"], typed_by_config.len());

    let d = find(&list, &sha256(&idx));
    assert_eq!(d["mediaType"], OCI_INDEX);
    assert!(
        d.get("artifactType").is_none(),
        "index without artifactType: omitted: {d}"
    );
    assert_eq!(d["annotations"]["org.example.kind"], "bundle");

    let (_, list) = referrers(&s, &format!("/v2/team/app/referrers/{unrelated}")).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sha256(&other));
}

/// `?artifactType=` filters, and the response says so with `OCI-Filters-Applied:
/// artifactType`.
#[tokio::test]
async fn referrers_filter_by_artifact_type() {
    let s = Server::start();
    let (subject, sm) = push_manifest(&s, "team/app", "v1", 4).await;
    push_empty_config(&s, "team/app").await;
    let data = s.push_blob("team/app", b"x").await;
    let sub = Some((subject.as_str(), sm.len()));
    let sbom = artifact(Some(SBOM), (&data, 1), sub, None);
    let sig = artifact(Some(SIG), (&data, 1), sub, Some(json!({"n": "1"})));
    for m in [&sbom, &sig] {
        assert_eq!(
            s.put_manifest("team/app", &sha256(m), OCI_MANIFEST, m)
                .await
                .status(),
            201
        );
    }
    let path = format!("/v2/team/app/referrers/{subject}");
    let (headers, list) = referrers(&s, &format!("{path}?artifactType={SBOM}")).await;
    assert_eq!(
        headers
            .get("oci-filters-applied")
            .and_then(|v| v.to_str().ok()),
        Some("artifactType")
    );
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sha256(&sbom));

    let (headers, list) = referrers(&s, &format!("{path}?artifactType=application/vnd.none")).await;
    assert!(headers.get("oci-filters-applied").is_some());
    assert!(list.is_empty());

    let (headers, list) = referrers(&s, &path).await;
    assert!(
        headers.get("oci-filters-applied").is_none(),
        "no filter, no header"
    );
    assert_eq!(list.len(), 2);
}

/// A referrer pushed before its subject is listed, and disappears once deleted.
#[tokio::test]
async fn referrer_before_subject_and_after_delete() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 5).await;
    let subject_bytes = p.oci(None);
    let subject = sha256(&subject_bytes);
    push_empty_config(&s, "team/app").await;
    let data = s.push_blob("team/app", b"x").await;
    let sig = artifact(
        Some(SIG),
        (&data, 1),
        Some((&subject, subject_bytes.len())),
        None,
    );
    let sig_d = sha256(&sig);
    assert_eq!(
        s.put_manifest("team/app", &sig_d, OCI_MANIFEST, &sig)
            .await
            .status(),
        201
    );
    let path = format!("/v2/team/app/referrers/{subject}");
    assert_eq!(
        referrers(&s, &path).await.1.len(),
        1,
        "listed before the subject exists"
    );

    assert_eq!(
        s.put_manifest("team/app", "v1", OCI_MANIFEST, &subject_bytes)
            .await
            .status(),
        201
    );
    assert_eq!(referrers(&s, &path).await.1.len(), 1);

    assert_eq!(
        delete(&s, &format!("/v2/team/app/manifests/{sig_d}"))
            .await
            .status(),
        202
    );
    assert!(
        referrers(&s, &path).await.1.is_empty(),
        "deleted referrers are not listed"
    );
}

/// A malformed digest is 400.
#[tokio::test]
async fn referrers_invalid_digest_is_400() {
    let s = Server::start();
    push_manifest(&s, "team/app", "v1", 6).await;
    for bad in [
        "sha256:xyz",
        "latest",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        expect_error(
            get(&s, &format!("/v2/team/app/referrers/{bad}")).await,
            400,
            "DIGEST_INVALID",
        )
        .await;
    }
}
