//! Who may do what: actions, roles, accounts and the one function that decides.
//!
//! The decision is pure: the caller gathers the facts (the namespace's visibility, the
//! caller's role there, a robot's grants) from the account store and [`allowed`] combines
//! them. Token issuing and request checks both go through it, so there is one rule.

use std::fmt;

use berth_oci::RepoName;

/// One thing a client may do to a repository (the `actions` of a token scope).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload blobs and push manifests and tags.
    Push,
    /// Delete manifests, tags and blob links.
    Delete,
}

impl Action {
    /// Every action, in the order scopes list them.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// The name used in token scopes and claims.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// Parses a scope action name; unknown names are `None` (and are simply not granted).
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

/// A set of actions; what a caller holds on one repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    /// Nothing.
    pub const NONE: Actions = Actions(0);
    /// Pull only.
    pub const PULL: Actions = Actions(1);
    /// Pull and push.
    pub const PULL_PUSH: Actions = Actions(3);
    /// Everything.
    pub const ALL: Actions = Actions(7);

    /// The set holding just `a`.
    pub fn of(a: Action) -> Actions {
        Actions(a.bit())
    }

    /// Whether every action of `other` is in this set.
    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Actions in both sets (what a token may carry: asked for ∩ allowed).
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// Actions in either set.
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// The actions, in scope order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL
            .into_iter()
            .filter(move |a| self.0 & a.bit() != 0)
    }

    /// Parses a comma-separated scope action list (`pull,push`, `*` for all); unknown
    /// names are ignored, as the token spec asks.
    pub fn parse_list(s: &str) -> Actions {
        s.split(',').fold(Actions::NONE, |acc, a| match a.trim() {
            "*" => Actions::ALL,
            a => Action::parse(a).map_or(acc, |a| acc.union(Actions::of(a))),
        })
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Actions::NONE, |acc, a| acc.union(Actions::of(a)))
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// A member's role in a namespace; each role includes everything of the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Pull.
    Reader,
    /// Pull and push.
    Writer,
    /// Pull, push, delete and tag rules.
    Maintainer,
    /// Everything, plus members and settings of the namespace.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 4] = [Role::Reader, Role::Writer, Role::Maintainer, Role::Admin];

    /// The repository actions the role grants.
    pub fn actions(self) -> Actions {
        match self {
            Role::Reader => Actions::PULL,
            Role::Writer => Actions::PULL_PUSH,
            Role::Maintainer | Role::Admin => Actions::ALL,
        }
    }

    /// The name used in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Whether anonymous clients may pull from a namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Visibility {
    /// Anyone may pull, without credentials.
    Public,
    /// Only members (and robots granted access) may pull.
    #[default]
    Private,
}

/// The namespace of a repository: its first path segment (`payments/api` → `payments`).
pub fn namespace_of(repo: &RepoName) -> &str {
    let name = repo.as_str();
    name.split_once('/').map_or(name, |(ns, _)| ns)
}

/// What kind of account authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    /// A person, with a password.
    User,
    /// A service account for CI: explicit grants, an optional expiry, a generated secret.
    Robot,
}

impl AccountKind {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Robot => "robot",
        }
    }

    /// Parses a kind name.
    pub fn parse(s: &str) -> Option<AccountKind> {
        match s {
            "user" => Some(AccountKind::User),
            "robot" => Some(AccountKind::Robot),
            _ => None,
        }
    }
}

/// A repository glob: `*` matches within one path segment, `**` any number of segments
/// (`ci/*` matches `ci/app` but not `ci/a/b`; `ci/**` matches both; `**` matches all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoPattern(String);

impl RepoPattern {
    /// Checks the pattern: repository-name characters, `/` and `*` only, no empty segment.
    pub fn parse(s: &str) -> Result<RepoPattern, String> {
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/*".contains(c));
        if s.is_empty() || !ok_chars || s.split('/').any(str::is_empty) {
            return Err(format!(
                "invalid repository pattern {s:?}: use lowercase repository names with `*` \
                 (one path segment) or `**` (any depth), e.g. `ci/*`"
            ));
        }
        Ok(RepoPattern(s.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `repo` matches.
    pub fn matches(&self, repo: &RepoName) -> bool {
        let pattern: Vec<&str> = self.0.split('/').collect();
        let name: Vec<&str> = repo.as_str().split('/').collect();
        segments_match(&pattern, &name)
    }
}

fn segments_match(pattern: &[&str], name: &[&str]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((&"**", rest)), _) => {
            (0..=name.len()).any(|skip| segments_match(rest, &name[skip..]))
        }
        (Some((p, prest)), Some((n, nrest))) => {
            glob_segment(p.as_bytes(), n.as_bytes()) && segments_match(prest, nrest)
        }
        _ => false,
    }
}

/// `*` matches any run of characters (within one path segment or one tag).
pub(crate) fn glob_segment(p: &[u8], n: &[u8]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((b'*', rest)) => (0..=n.len()).any(|i| glob_segment(rest, &n[i..])),
        Some((c, rest)) => n.first() == Some(c) && glob_segment(rest, &n[1..]),
    }
}

/// A robot's grant: actions on the repositories that match a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RobotGrant {
    /// Which repositories.
    pub pattern: RepoPattern,
    /// What the robot may do there.
    pub actions: Actions,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// User or robot.
    pub kind: AccountKind,
    /// Registry administrators may do everything everywhere.
    pub registry_admin: bool,
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A verified account.
    Account(Account),
}

impl Principal {
    /// The account name, or `""` for anonymous (the token `sub` claim).
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "",
            Principal::Account(a) => &a.name,
        }
    }
}

/// The stored facts that decide what one caller may do in one repository.
#[derive(Clone, Debug, Default)]
pub struct AccessFacts {
    /// Visibility of the repository's namespace (private when the namespace is not set up).
    pub visibility: Visibility,
    /// The caller's role in the namespace, if a member.
    pub role: Option<Role>,
    /// A robot's grants (empty for users).
    pub robot_grants: Vec<RobotGrant>,
}

/// What `principal` may do in `repo`, given the facts. The only access rule of berth.
pub fn allowed(principal: &Principal, repo: &RepoName, facts: &AccessFacts) -> Actions {
    let public = if facts.visibility == Visibility::Public {
        Actions::PULL
    } else {
        Actions::NONE
    };
    let account = match principal {
        Principal::Anonymous => return public,
        Principal::Account(a) => a,
    };
    if account.registry_admin {
        return Actions::ALL;
    }
    let by_role = facts.role.map_or(Actions::NONE, Role::actions);
    let by_grant = facts
        .robot_grants
        .iter()
        .filter(|g| g.pattern.matches(repo))
        .fold(Actions::NONE, |acc, g| acc.union(g.actions));
    public.union(by_role).union(by_grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn user(admin: bool) -> Principal {
        Principal::Account(Account {
            id: 1,
            name: "ann".into(),
            kind: AccountKind::User,
            registry_admin: admin,
        })
    }

    #[test]
    fn namespace_is_the_first_segment() {
        assert_eq!(namespace_of(&repo("payments/api")), "payments");
        assert_eq!(namespace_of(&repo("payments/api/worker")), "payments");
        assert_eq!(namespace_of(&repo("alpine")), "alpine");
    }

    #[test]
    fn action_lists_parse_like_token_scopes() {
        assert_eq!(Actions::parse_list("pull"), Actions::PULL);
        assert_eq!(Actions::parse_list("pull,push"), Actions::PULL_PUSH);
        assert_eq!(Actions::parse_list("*"), Actions::ALL);
        assert_eq!(Actions::parse_list("pull,frobnicate"), Actions::PULL);
        assert_eq!(Actions::parse_list(""), Actions::NONE);
        assert_eq!(Actions::ALL.to_string(), "pull,push,delete");
    }

    #[test]
    fn roles_grow_monotonically() {
        assert_eq!(Role::Reader.actions(), Actions::PULL);
        assert_eq!(Role::Writer.actions(), Actions::PULL_PUSH);
        assert!(
            Role::Maintainer
                .actions()
                .contains(Actions::of(Action::Delete))
        );
        for pair in Role::ALL.windows(2) {
            assert!(pair[1].actions().contains(pair[0].actions()));
        }
        assert_eq!(Role::parse("maintainer"), Some(Role::Maintainer));
        assert_eq!(Role::parse("owner"), None);
    }

    #[test]
    fn anonymous_pulls_only_public_namespaces() {
        let public = AccessFacts {
            visibility: Visibility::Public,
            ..AccessFacts::default()
        };
        let r = repo("lib/app");
        assert_eq!(allowed(&Principal::Anonymous, &r, &public), Actions::PULL);
        assert_eq!(
            allowed(&Principal::Anonymous, &r, &AccessFacts::default()),
            Actions::NONE
        );
    }

    #[test]
    fn members_get_their_role_and_admins_everything() {
        let r = repo("payments/api");
        let writer = AccessFacts {
            role: Some(Role::Writer),
            ..AccessFacts::default()
        };
        assert_eq!(allowed(&user(false), &r, &writer), Actions::PULL_PUSH);
        assert_eq!(
            allowed(&user(false), &r, &AccessFacts::default()),
            Actions::NONE
        );
        assert_eq!(
            allowed(&user(true), &r, &AccessFacts::default()),
            Actions::ALL
        );
    }

    #[test]
    fn robots_get_the_union_of_matching_grants() {
        let robot = Principal::Account(Account {
            id: 2,
            name: "ci".into(),
            kind: AccountKind::Robot,
            registry_admin: false,
        });
        let facts = AccessFacts {
            robot_grants: vec![
                RobotGrant {
                    pattern: RepoPattern::parse("ci/*").unwrap(),
                    actions: Actions::PULL_PUSH,
                },
                RobotGrant {
                    pattern: RepoPattern::parse("shared/**").unwrap(),
                    actions: Actions::PULL,
                },
            ],
            ..AccessFacts::default()
        };
        assert_eq!(allowed(&robot, &repo("ci/app"), &facts), Actions::PULL_PUSH);
        assert_eq!(allowed(&robot, &repo("ci/a/b"), &facts), Actions::NONE);
        assert_eq!(allowed(&robot, &repo("shared/x/y"), &facts), Actions::PULL);
        assert_eq!(
            allowed(&robot, &repo("payments/api"), &facts),
            Actions::NONE
        );
    }

    #[test]
    fn patterns_glob_within_and_across_segments() {
        let p = |s: &str| RepoPattern::parse(s).unwrap();
        assert!(p("ci/*").matches(&repo("ci/app")));
        assert!(!p("ci/*").matches(&repo("ci")));
        assert!(!p("ci/*").matches(&repo("cix/app")));
        assert!(p("ci/app-*").matches(&repo("ci/app-web")));
        assert!(!p("ci/app-*").matches(&repo("ci/web")));
        assert!(p("ci/**").matches(&repo("ci/a/b/c")));
        assert!(p("**").matches(&repo("anything/at/all")));
        assert!(p("*/api").matches(&repo("payments/api")));
        assert!(p("payments/api").matches(&repo("payments/api")));
        assert!(!p("payments/api").matches(&repo("payments/api2")));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_hint() {
        for bad in ["", "ci//app", "CI/*", "ci/app?", "/ci"] {
            let e = RepoPattern::parse(bad).unwrap_err();
            assert!(e.contains("invalid repository pattern"), "{bad}: {e}");
        }
    }
}
