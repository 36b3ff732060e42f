//! `GET /v2/_catalog` with `n`, `last` and `Link` (Docker's "Listing Repositories").

use super::*;

async fn page(s: &Server, path: &str) -> (Vec<String>, Option<String>) {
    let res = get(s, path).await;
    assert_eq!(res.status(), 200, "GET {path}");
    let link = next_link(&res);
    let body: Value = res.json().await.unwrap();
    let repos = serde_json::from_value(body["repositories"].clone())
        .unwrap_or_else(|_| panic!("repositories must be a list: {body}"));
    (repos, link)
}

/// Every repository with content is listed, sorted; pages of `n` chain through `Link`;
/// `last` is exclusive; `n=0` is empty without `Link`.
#[tokio::test]
async fn catalog_lists_and_paginates() {
    let s = Server::start();
    let mut names: Vec<String> = (0..12)
        .map(|i| format!("team{}/app", (i * 5) % 12))
        .collect();
    names.push("a".into());
    names.push("a/b/c".into());
    names.push("a-b".into());
    for n in &names {
        s.push_blob(n, n.as_bytes()).await;
    }
    // An upload that never finished does not create a repository.
    start_upload(&s, "unfinished/app").await;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

    let (all, link) = page(&s, "/v2/_catalog").await;
    assert_eq!(all, names);
    assert!(link.is_none());

    let mut path = "/v2/_catalog?n=4".to_owned();
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let (items, link) = page(&s, &path).await;
        sizes.push(items.len());
        got.extend(items);
        match link {
            Some(next) => path = next,
            None => break,
        }
        assert!(sizes.len() < 10);
    }
    assert_eq!(sizes, [4, 4, 4, 3]);
    assert_eq!(got, names);

    let (items, _) = page(&s, &format!("/v2/_catalog?last={}", names[2])).await;
    assert_eq!(items, names[3..]);
    let (items, link) = page(&s, "/v2/_catalog?n=0").await;
    assert!(items.is_empty());
    assert!(link.is_none());
}

/// An empty registry has an empty catalog.
#[tokio::test]
async fn empty_catalog() {
    let s = Server::start();
    let (items, link) = page(&s, "/v2/_catalog").await;
    assert!(items.is_empty());
    assert!(link.is_none());
}
