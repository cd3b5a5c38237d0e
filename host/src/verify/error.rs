//! Why a step of `vapgen verify` failed. The text is what the report shows: a row's reason,
//! or a line of the run's errors on stderr.

use std::path::PathBuf;

pub(crate) use crate::validate::api_message as kube_message;

/// Why reading a suite, preparing a case or talking to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A suite, or a file one of its cases names, cannot be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not what a suite needs: YAML that does not parse, no object, not a gator
    /// suite, or a suite without its fields.
    #[error("{0}")]
    Input(String),
    /// The API server refused a request, or it could not be sent.
    #[error("{}", api_text(.context, .source))]
    Api {
        /// What was being done (`applying Kind name`); empty for a case's own request.
        context: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// The cluster cannot run a test or case: it does not serve a kind, or does not serve
    /// the constraint kind or enforce the policy in time.
    #[error("{0}")]
    Cluster(String),
    /// The cluster did not answer as the case expects.
    #[error("{0}")]
    Verdict(String),
}

impl VerifyError {
    /// A refusal or failure of the API server while `context`.
    pub(crate) fn api(context: impl Into<String>, source: kube::Error) -> Self {
        VerifyError::Api {
            context: context.into(),
            source,
        }
    }
}

fn api_text(context: &str, source: &kube::Error) -> String {
    match context {
        "" => kube_message(source),
        c => format!("{c}: {}", kube_message(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_reports() {
        let status = kube::core::Status::failure("denied by policy p", "Invalid").with_code(422);
        let e = VerifyError::api("applying ConfigMap a", kube::Error::Api(Box::new(status)));
        assert_eq!(e.to_string(), "applying ConfigMap a: denied by policy p");
        assert!(std::error::Error::source(&e).is_some());
        let read = VerifyError::Read {
            path: "/x/suite.yaml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(read.to_string().starts_with("/x/suite.yaml: "), "{read}");
    }
}
