//! The fault-injection seam, compiled only with the `fault-injection` feature (which
//! only the test crates turn on): it drops chosen answers from the server, so tests can
//! show that a lost answer or a client killed mid-request never puts a device out of
//! step. TLS hides frames from an outside proxy, so the seam sits in the client's
//! reader, after decryption.
use std::sync::{Arc, Mutex};

/// What happens to a matching answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The answer is dropped and the connection cut, as if the network failed after the
    /// server acted.
    Cut,
    /// The answer is dropped and the request left waiting forever, as if the client
    /// froze; tests then kill the client.
    Swallow,
}

#[derive(Debug)]
struct Rule {
    answer: String,
    action: Action,
    /// Matching answers to let through before this rule fires.
    skip: usize,
}

/// A change a test makes to the next request this client sends (a `Commit` whose
/// routing header lies, a request the server must refuse): issue 29's attacks.
pub type Rewrite = Box<dyn FnMut(&mut hush_proto::pb::client_frame::Body) -> bool + Send>;

/// Rules shared by every connection a client opens; each fires once.
#[derive(Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Rule>>>,
    fired: Arc<Mutex<Vec<String>>>,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("rules", &self.rules)
            .field("fired", &self.fired)
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// Drops the next answer of kind `answer` (`group_created`, `commit_accepted`,
    /// `sent`, `acked`, `mailbox`, ...) as `action` says.
    pub fn drop_next(&self, answer: &str, action: Action) {
        self.drop_nth(answer, 0, action);
    }

    /// Like [`Faults::drop_next`], after letting `skip` matching answers through.
    pub fn drop_nth(&self, answer: &str, skip: usize, action: Action) {
        if let Ok(mut rules) = self.rules.lock() {
            rules.push(Rule {
                answer: answer.to_owned(),
                action,
                skip,
            });
        }
    }

    /// Rewrites the next `Commit` request this client sends (its routing header, its
    /// bytes), as a hostile member's client would.
    pub fn rewrite_next_commit(
        &self,
        f: impl FnOnce(&mut hush_proto::pb::Commit) + Send + 'static,
    ) {
        let mut f = Some(f);
        self.rewrite_next(move |body| match body {
            hush_proto::pb::client_frame::Body::Commit(c) => {
                if let Some(f) = f.take() {
                    f(c);
                }
                true
            }
            _ => false,
        });
    }

    /// Rewrites the next request for which `f` returns `true` (it may change it).
    pub fn rewrite_next(
        &self,
        f: impl FnMut(&mut hush_proto::pb::client_frame::Body) -> bool + Send + 'static,
    ) {
        if let Ok(mut r) = self.rewrite.lock() {
            *r = Some(Box::new(f));
        }
    }

    pub(crate) fn on_request(&self, body: &mut hush_proto::pb::client_frame::Body) {
        let Ok(mut rewrite) = self.rewrite.lock() else {
            return;
        };
        if let Some(f) = rewrite.as_mut()
            && f(body)
        {
            tracing::warn!("fault injected: a rewritten request");
            *rewrite = None;
        }
    }

    /// The answers dropped so far, by kind.
    pub fn fired(&self) -> Vec<String> {
        self.fired.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub(crate) fn on_answer(&self, kind: &str) -> Option<Action> {
        let mut rules = self.rules.lock().ok()?;
        let i = rules.iter().position(|r| r.answer == kind)?;
        if rules[i].skip > 0 {
            rules[i].skip -= 1;
            return None;
        }
        let rule = rules.remove(i);
        if let Ok(mut fired) = self.fired.lock() {
            fired.push(rule.answer);
        }
        tracing::warn!(answer = kind, action = ?rule.action, "fault injected");
        Some(rule.action)
    }
}
