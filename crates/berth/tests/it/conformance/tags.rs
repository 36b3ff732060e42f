//! "Listing Tags": order, `n`, `last`, `Link` pagination.

use super::*;

/// Tags the way Go's `sort.Strings` orders them (byte order).
fn ascii_sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    v
}

async fn tag_all(s: &Server, repo: &str, tags: &[String]) -> String {
    let p = push_parts(s, repo, 1).await;
    let m = p.oci(None);
    let d = sha256(&m);
    for chunk in tags.chunks(50) {
        let q: Vec<String> = chunk.iter().map(|t| format!("tag={t}")).collect();
        let res = s
            .req(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{d}?{}", q.join("&")),
            )
            .header("content-type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    d
}

async fn list(s: &Server, path: &str) -> (Vec<String>, Option<String>) {
    let res = get(s, path).await;
    assert_eq!(res.status(), 200, "GET {path}");
    let link = next_link(&res);
    let body: Value = res.json().await.unwrap();
    let tags = body["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("tags must be a list: {body}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    (tags, link)
}

/// 200 with `{"name","tags"}`, tags in ASCII ("ASCIIbetical") order.
#[tokio::test]
async fn tags_are_listed_in_ascii_order() {
    let s = Server::start();
    let tags: Vec<String> = [
        "latest", "B", "a", "_x", "10", "9", "A-1", "v1.0", "v1.0-rc", "Z", "z",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    tag_all(&s, "team/app", &tags).await;
    let res = get(&s, "/v2/team/app/tags/list").await;
    assert_eq!(res.status(), 200);
    assert!(header(&res, "link").is_none(), "everything fits: no Link");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "team/app");
    let got: Vec<String> = serde_json::from_value(body["tags"].clone()).unwrap();
    assert_eq!(got, ascii_sorted(tags));
}

/// 25 tags with `n=10`: pages of 10, 10 and 5, each following the previous page's
/// `Link: <…>; rel="next"`; the last page has no `Link`.
#[tokio::test]
async fn tags_paginate_with_n_and_link() {
    let s = Server::start();
    let tags: Vec<String> = (0..25).map(|i| format!("t{:02}", (i * 7) % 25)).collect();
    tag_all(&s, "team/app", &tags).await;
    let mut path = "/v2/team/app/tags/list?n=10".to_owned();
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let (page, link) = list(&s, &path).await;
        sizes.push(page.len());
        all.extend(page);
        match link {
            Some(next) => {
                assert!(next.contains("/v2/team/app/tags/list?"), "{next}");
                path = next;
            }
            None => break,
        }
        assert!(sizes.len() < 10, "pagination must end");
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(all, ascii_sorted(tags));
}

/// `last` starts after the named tag (exclusive), with or without `n`.
#[tokio::test]
async fn tags_last_is_exclusive() {
    let s = Server::start();
    let tags: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    tag_all(&s, "team/app", &tags).await;
    assert_eq!(
        list(&s, "/v2/team/app/tags/list?last=b").await.0,
        ["c", "d", "e"]
    );
    let (page, link) = list(&s, "/v2/team/app/tags/list?n=2&last=b").await;
    assert_eq!(page, ["c", "d"]);
    assert!(link.is_some(), "more tags follow");
    let (page, link) = list(&s, "/v2/team/app/tags/list?n=2&last=c").await;
    assert_eq!(page, ["d", "e"]);
    assert!(link.is_none(), "no tags follow");
    assert_eq!(
        list(&s, "/v2/team/app/tags/list?last=e").await.0,
        Vec::<String>::new()
    );
    // `last` need not be an existing tag.
    assert_eq!(
        list(&s, "/v2/team/app/tags/list?last=bb").await.0,
        ["c", "d", "e"]
    );
}

/// `n` larger than the number of tags returns them all, without `Link`; `n` equal to the
/// remainder must return exactly `n`.
#[tokio::test]
async fn tags_n_larger_than_count() {
    let s = Server::start();
    let tags: Vec<String> = ["a", "b", "c"].iter().map(|t| t.to_string()).collect();
    tag_all(&s, "team/app", &tags).await;
    let (page, link) = list(&s, "/v2/team/app/tags/list?n=100").await;
    assert_eq!(page, ["a", "b", "c"]);
    assert!(link.is_none());
    let (page, _) = list(&s, "/v2/team/app/tags/list?n=3").await;
    assert_eq!(page, ["a", "b", "c"]);
}

/// `n=0` MUST return an empty list and MUST NOT include a `Link` header.
#[tokio::test]
async fn tags_n_zero_is_empty_without_link() {
    let s = Server::start();
    let tags: Vec<String> = ["a", "b"].iter().map(|t| t.to_string()).collect();
    tag_all(&s, "team/app", &tags).await;
    let (page, link) = list(&s, "/v2/team/app/tags/list?n=0").await;
    assert!(page.is_empty());
    assert!(link.is_none());
}

/// A repository with content but no tags lists an empty `tags`.
#[tokio::test]
async fn repository_without_tags_lists_none() {
    let s = Server::start();
    s.push_blob("team/app", b"layer").await;
    let (page, link) = list(&s, "/v2/team/app/tags/list").await;
    assert!(page.is_empty());
    assert!(link.is_none());
}

/// Tags of an unknown repository: 404 `NAME_UNKNOWN`.
#[tokio::test]
async fn tags_of_unknown_repository_is_404() {
    let s = Server::start();
    s.push_blob("team/app", b"layer").await;
    expect_error(
        get(&s, "/v2/team/nope/tags/list").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    expect_error(
        get(&s, "/v2/team/nope/tags/list?n=10").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

/// A non-numeric `n` is a bad request.
#[tokio::test]
async fn tags_bad_n_is_400() {
    let s = Server::start();
    s.push_blob("team/app", b"layer").await;
    for n in ["abc", "-1"] {
        let res = get(&s, &format!("/v2/team/app/tags/list?n={n}")).await;
        assert_eq!(res.status(), 400, "n={n}");
        check_error_body(&res.json().await.unwrap());
    }
}

/// More tags than fit in one page: a request without `n` (or with a huge `n`) gets a page
/// and a `Link` to the rest rather than silently losing tags.
#[tokio::test]
async fn more_tags_than_one_page() {
    let s = Server::start();
    let tags: Vec<String> = (0..1001).map(|i| format!("t{i:04}")).collect();
    tag_all(&s, "team/app", &tags).await;
    for first in ["/v2/team/app/tags/list", "/v2/team/app/tags/list?n=5000"] {
        let mut path = first.to_owned();
        let mut all = Vec::new();
        loop {
            let (page, link) = list(&s, &path).await;
            assert!(!page.is_empty() || link.is_none());
            all.extend(page);
            match link {
                Some(next) => path = next,
                None => break,
            }
            assert!(all.len() <= tags.len(), "pagination must end");
        }
        assert_eq!(all, tags, "{first}");
    }
}
