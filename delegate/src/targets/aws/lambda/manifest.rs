//! The Lambda function definition as users write it (camelCase, as AWS writes
//! it), and its conversion to CreateFunction / UpdateFunctionConfiguration.

use std::collections::BTreeMap;

use aws_sdk_lambda::types as t;
use serde::Deserialize;

use crate::targets::aws::AwsError;

/// A function definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FunctionDefinition {
    /// Name.
    pub function_name: String,
    /// Execution role ARN (required to create).
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    handler: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    memory_size: Option<i32>,
    #[serde(default)]
    timeout: Option<i32>,
    #[serde(default)]
    environment: Option<Environment>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    layers: Vec<String>,
    #[serde(default)]
    ephemeral_storage: Option<EphemeralStorage>,
    #[serde(default)]
    vpc_config: Option<VpcConfig>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Environment {
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EphemeralStorage {
    size: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VpcConfig {
    #[serde(default)]
    subnet_ids: Vec<String>,
    #[serde(default)]
    security_group_ids: Vec<String>,
}

impl FunctionDefinition {
    /// Checks what the schema cannot.
    pub fn check(&self) -> Result<(), AwsError> {
        if self.function_name.trim().is_empty() {
            return Err(AwsError::other("functionDefinition.functionName: must not be empty"));
        }
        if let Some(m) = self.memory_size
            && !(128..=10240).contains(&m)
        {
            return Err(AwsError::other(format!("functionDefinition.memorySize: {m} is not 128 to 10240")));
        }
        if let Some(s) = self.timeout
            && !(1..=900).contains(&s)
        {
            return Err(AwsError::other(format!("functionDefinition.timeout: {s} is not 1 to 900 seconds")));
        }
        Ok(())
    }

    fn environment(&self) -> Option<t::Environment> {
        self.environment.as_ref().map(|e| {
            t::Environment::builder().set_variables(Some(e.variables.clone().into_iter().collect())).build()
        })
    }

    fn ephemeral(&self) -> Result<Option<t::EphemeralStorage>, AwsError> {
        self.ephemeral_storage
            .as_ref()
            .map(|e| {
                t::EphemeralStorage::builder()
                    .size(e.size)
                    .build()
                    .map_err(|err| AwsError::other(format!("functionDefinition.ephemeralStorage: {err}")))
            })
            .transpose()
    }

    fn vpc(&self) -> Option<t::VpcConfig> {
        self.vpc_config.as_ref().map(|v| {
            t::VpcConfig::builder()
                .set_subnet_ids(Some(v.subnet_ids.clone()))
                .set_security_group_ids(Some(v.security_group_ids.clone()))
                .build()
        })
    }

    /// CreateFunction with `code`.
    pub fn create(
        &self,
        client: &aws_sdk_lambda::Client,
        code: t::FunctionCode,
    ) -> Result<aws_sdk_lambda::operation::create_function::builders::CreateFunctionFluentBuilder, AwsError>
    {
        let role = self
            .role
            .clone()
            .ok_or_else(|| AwsError::other("functionDefinition.role: needed to create the function"))?;
        Ok(client
            .create_function()
            .function_name(&self.function_name)
            .role(role)
            .code(code)
            .set_runtime(self.runtime.as_deref().map(t::Runtime::from))
            .set_handler(self.handler.clone())
            .set_description(self.description.clone())
            .set_memory_size(self.memory_size)
            .set_timeout(self.timeout)
            .set_environment(self.environment())
            .set_architectures(
                (!self.architectures.is_empty())
                    .then(|| self.architectures.iter().map(|a| t::Architecture::from(a.as_str())).collect()),
            )
            .set_layers((!self.layers.is_empty()).then(|| self.layers.clone()))
            .set_ephemeral_storage(self.ephemeral()?)
            .set_vpc_config(self.vpc())
            .set_tags((!self.tags.is_empty()).then(|| self.tags.clone().into_iter().collect()))
            .package_type(t::PackageType::Zip)
            .publish(false))
    }

    /// UpdateFunctionConfiguration.
    pub fn update(
        &self,
        client: &aws_sdk_lambda::Client,
    ) -> Result<
        aws_sdk_lambda::operation::update_function_configuration::builders::UpdateFunctionConfigurationFluentBuilder,
        AwsError,
    >{
        Ok(client
            .update_function_configuration()
            .function_name(&self.function_name)
            .set_role(self.role.clone())
            .set_runtime(self.runtime.as_deref().map(t::Runtime::from))
            .set_handler(self.handler.clone())
            .set_description(self.description.clone())
            .set_memory_size(self.memory_size)
            .set_timeout(self.timeout)
            .set_environment(self.environment())
            .set_layers((!self.layers.is_empty()).then(|| self.layers.clone()))
            .set_ephemeral_storage(self.ephemeral()?)
            .set_vpc_config(self.vpc()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::aws::document::read_plain;

    #[test]
    fn function_definitions_read_and_are_checked() {
        let f: FunctionDefinition = read_plain(
            "functionDefinition",
            "functionName: hello\nruntime: python3.12\nhandler: app.handler\nrole: arn:aws:iam::1:role/r\n\
             memorySize: 256\ntimeout: 30\nenvironment: {variables: {MODE: prod}}\n",
        )
        .unwrap();
        assert!(f.check().is_ok());
        assert_eq!(f.environment().unwrap().variables().unwrap()["MODE"], "prod");
        let e = read_plain::<FunctionDefinition>("functionDefinition", "functionName: x\nmemory: 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("functionDefinition.memory: unknown field `memory`"), "{e}");
        let f: FunctionDefinition =
            read_plain("functionDefinition", "functionName: x\ntimeout: 901").unwrap();
        assert!(f.check().unwrap_err().to_string().contains("functionDefinition.timeout"));
        let f: FunctionDefinition = read_plain("functionDefinition", "functionName: x").unwrap();
        let client = aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::Config::builder()
                .behavior_version(aws_sdk_lambda::config::BehaviorVersion::latest())
                .build(),
        );
        let e = f.create(&client, t::FunctionCode::builder().build()).err().unwrap();
        assert!(e.to_string().contains("functionDefinition.role"));
    }
}
