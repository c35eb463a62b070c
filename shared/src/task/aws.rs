//! How an AWS task reaches AWS: region, optional endpoint override, and where the
//! credentials come from. Shared by the `ecs` and `lambda` kinds.
//!
//! Credentials are either the delegate's own (environment, profile, container or
//! instance role: the AWS default chain) or secret *references* in the
//! connector, resolved by the delegate right before use. The manager never sees
//! a key.

use serde::{Deserialize, Serialize};

use super::{InvalidTaskSpec, check_refs, check_url, field, with_placeholders};

/// Connection to AWS for one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsConnection {
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint URL for every AWS service (private endpoints, emulators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Access key id: a secret reference (or a plain id); with
    /// `secret_access_key`. Absent: the delegate's default credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key: a secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Session token for temporary keys: a secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    /// Role assumed with the credentials above (cross-account access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// External id required by the role's trust policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

impl AwsConnection {
    /// Checks what the schema cannot. Field names are prefixed with `aws.`.
    pub fn validate(&self) -> Result<(), InvalidTaskSpec> {
        check_region(&self.region).map_err(|r| field("aws.region", r))?;
        if let Some(e) = &self.endpoint {
            check_url(&with_placeholders("aws.endpoint", e)?).map_err(|r| field("aws.endpoint", r))?;
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => return Err(field("aws.secretAccessKey", "accessKeyId is set without it")),
            (None, Some(_)) => return Err(field("aws.accessKeyId", "secretAccessKey is set without it")),
            (None, None) if self.session_token.is_some() => {
                return Err(field("aws.sessionToken", "needs accessKeyId and secretAccessKey"));
            }
            _ => {}
        }
        for (name, v) in [
            ("aws.accessKeyId", &self.access_key_id),
            ("aws.secretAccessKey", &self.secret_access_key),
            ("aws.sessionToken", &self.session_token),
            ("aws.externalId", &self.external_id),
        ] {
            if let Some(v) = v {
                check_refs(name, v)?;
            }
        }
        if let Some(arn) = &self.role_arn
            && !arn.starts_with("arn:")
        {
            return Err(field(
                "aws.roleArn",
                format!("{arn:?} is not an ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
            ));
        }
        Ok(())
    }
}

/// Checks a region name: lower-case letters, digits and dashes.
pub fn check_region(region: &str) -> Result<(), String> {
    if region.is_empty() {
        return Err("must not be empty".into());
    }
    if !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(format!("{region:?} is not a region name like us-east-1"));
    }
    Ok(())
}

/// Checks a name AWS resources take (letters, digits, `-`, `_`), up to `max`.
pub(crate) fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), InvalidTaskSpec> {
    if name.is_empty() || name.len() > max {
        return Err(field(what, format!("must be 1 to {max} characters")));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(field(what, format!("{name:?} may hold only letters, digits, '-' and '_'")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> AwsConnection {
        AwsConnection { region: "us-east-1".into(), ..Default::default() }
    }

    #[test]
    fn connections_are_checked() {
        assert!(conn().validate().is_ok());
        let ok = AwsConnection {
            endpoint: Some("http://127.0.0.1:5000".into()),
            access_key_id: Some("<+secrets.getValue(\"env:AK\")>".into()),
            secret_access_key: Some("<+secrets.getValue(\"env:SK\")>".into()),
            role_arn: Some("arn:aws:iam::123456789012:role/deploy".into()),
            ..conn()
        };
        assert!(ok.validate().is_ok());
        for (c, needle) in [
            (AwsConnection { region: String::new(), ..conn() }, "aws.region: must not be empty"),
            (AwsConnection { region: "US East".into(), ..conn() }, "aws.region"),
            (AwsConnection { endpoint: Some("ftp://x".into()), ..conn() }, "aws.endpoint"),
            (AwsConnection { access_key_id: Some("AK".into()), ..conn() }, "aws.secretAccessKey"),
            (
                AwsConnection { secret_access_key: Some("<+secrets.getValue(\"env:\")>".into()), ..conn() },
                "aws.accessKeyId",
            ),
            (AwsConnection { session_token: Some("t".into()), ..conn() }, "aws.sessionToken"),
            (AwsConnection { role_arn: Some("deploy".into()), ..conn() }, "aws.roleArn"),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{c:?}: {e}");
        }
        let bad_ref = AwsConnection {
            access_key_id: Some("<+secrets.getValue(\"env:\")>".into()),
            secret_access_key: Some("x".into()),
            ..conn()
        };
        assert!(bad_ref.validate().unwrap_err().to_string().contains("in aws.accessKeyId"));
    }
}
