//! Who may do what: SQUAD's group roles and the rules built on them.

use std::fmt;
use std::str::FromStr;

/// A user's role in a group, from least to most powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Sees the group's private projects.
    Member,
    /// Also submits results.
    Submitter,
    /// Also submits and manages CI test jobs.
    Privileged,
    /// Also changes the group and its projects.
    Admin,
}

impl Role {
    /// Every role, from least to most powerful.
    pub const ALL: [Role; 4] = [Role::Member, Role::Submitter, Role::Privileged, Role::Admin];

    /// The name stored and shown (`member`, `submitter`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Submitter => "submitter",
            Role::Privileged => "privileged",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of SQUAD's four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected member, submitter, privileged or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// What a caller is, as far as one group is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caller {
    /// Whether the caller is an authenticated user.
    pub authenticated: bool,
    /// Whether the caller is a superuser (may do anything).
    pub superuser: bool,
    /// The caller's role in the group, if a member.
    pub role: Option<Role>,
}

impl Caller {
    fn has(&self, least: Role) -> bool {
        self.superuser || self.role.is_some_and(|r| r >= least)
    }

    /// May see a project (public, or the caller belongs to its group).
    pub fn can_view(&self, project_is_public: bool) -> bool {
        project_is_public || self.superuser || self.role.is_some()
    }

    /// May submit results (`/api/submit`, `/api/createbuild`).
    pub fn can_submit_results(&self) -> bool {
        self.has(Role::Submitter)
    }

    /// May submit and manage CI test jobs.
    pub fn can_submit_testjobs(&self) -> bool {
        self.has(Role::Privileged)
    }

    /// May change the group and its projects.
    pub fn can_write(&self) -> bool {
        self.has(Role::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_order() {
        assert_eq!("privileged".parse::<Role>().unwrap(), Role::Privileged);
        assert!("owner".parse::<Role>().unwrap_err().to_string().contains("owner"));
        assert!(Role::Member < Role::Submitter && Role::Privileged < Role::Admin);
    }

    #[test]
    fn role_matrix_as_squad() {
        let anonymous = Caller::default();
        let member = |role| Caller { authenticated: true, superuser: false, role: Some(role) };
        let root = Caller { authenticated: true, superuser: true, role: None };

        assert!(anonymous.can_view(true) && !anonymous.can_view(false));
        assert!(!anonymous.can_submit_results());
        assert!(member(Role::Member).can_view(false));
        assert!(!member(Role::Member).can_submit_results());
        assert!(member(Role::Submitter).can_submit_results());
        assert!(!member(Role::Submitter).can_submit_testjobs());
        assert!(member(Role::Privileged).can_submit_testjobs());
        assert!(!member(Role::Privileged).can_write());
        assert!(member(Role::Admin).can_write());
        assert!(root.can_view(false) && root.can_write());
    }
}
