//! A database password kept in OpenBao, used by one pipeline in a shell step and
//! in an ECS task definition's environment: the delegate reads it from the real
//! OpenBao (KV v2, token auth) right before each task, ECS (moto) receives it,
//! every log line masks it, and neither the manager's store nor its log ever
//! holds it.

use std::time::Duration;

use dray_tests::moto::Moto;
use dray_tests::openbao::OpenBao;
use dray_tests::*;
use serde_json::json;

const T: Duration = Duration::from_secs(120);
const DB_PASSWORD: &str = "Vault-held-Db-Pw-7731";

const PIPELINE: &str = r#"
service:
  name: Orders (ECS)
  identifier: orders_ecs
  serviceDefinition:
    type: ECS
    spec:
      manifests:
        - manifest:
            identifier: task
            type: EcsTaskDefinition
            spec:
              content: |
                family: orders
                networkMode: awsvpc
                requiresCompatibilities: [FARGATE]
                cpu: 256
                memory: 512
                containerDefinitions:
                  - name: app
                    image: public.ecr.aws/nginx/nginx:1.27
                    environment:
                      - {name: DB_PASSWORD, value: '<+secrets.getValue("vault://main/secret/orders/db#password")>'}
        - manifest:
            identifier: service
            type: EcsServiceDefinition
            spec:
              content: |
                serviceName: orders
                desiredCount: 1
                launchType: FARGATE
                networkConfiguration:
                  awsvpcConfiguration:
                    subnets: ["<+pipeline.variables.subnet>"]
                    securityGroups: ["<+pipeline.variables.securityGroup>"]
---
pipeline:
  name: Orders with a Vault secret
  identifier: orders_vault
  variables:
    - {name: awsEndpoint, type: String, value: <+input>}
    - {name: cluster, type: String, value: <+input>.default(demo)}
    - {name: subnet, type: String, value: <+input>}
    - {name: securityGroup, type: String, value: <+input>}
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Deployment
        spec:
          deploymentType: ECS
          service: {serviceRef: orders_ecs}
          environment:
            environmentRef: staging
            infrastructureDefinitions: [{identifier: ecs_demo}]
          execution:
            steps:
              - step:
                  name: Migrate
                  identifier: migrate
                  type: ShellScript
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: |
                          PW='<+secrets.getValue("vault://main/secret/orders/db#password")>'
                          echo "connecting with $PW"
                          echo "as base64 $(printf %s "$PW" | base64)"
                          test "$PW" = "$EXPECTED" && echo "password matches"
                    environmentVariables:
                      - {name: EXPECTED, type: String, value: '<+secrets.getValue("env:EXPECTED_PW")>'}
              - step:
                  name: Rolling deploy
                  identifier: rolling
                  type: EcsRollingDeploy
                  timeout: 10m
                  spec: {}
"#;

#[test]
fn a_vault_password_reaches_a_shell_step_and_ecs_but_no_log_and_not_the_manager() -> anyhow::Result<()> {
    let bao = OpenBao::start()?;
    bao.kv2_put("secret", "orders/db", json!({"password": DB_PASSWORD}))?;
    bao.put_policy("orders", r#"path "secret/data/orders/*" { capabilities = ["read"] }"#)?;
    let token = bao.create_token(&["orders"], "1h")?;
    let moto = Moto::start()?;
    moto.cluster("demo")?;
    let (subnet, sg, _) = moto.network()?;

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("main.token"), &token)?;
    let config = dir.path().join("delegate.toml");
    std::fs::write(
        &config,
        format!(
            "[vault.main]\naddress = \"{}\"\nauth = {{ method = \"token\", token-file = \"{}/main.token\" }}\n",
            bao.address(),
            dir.path().display()
        ),
    )?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let env = vec![
        ("DRAY_CONFIG".to_string(), config.display().to_string()),
        ("AWS_DEPLOY_KEY_ID".to_string(), "AKIDTESTING".to_string()),
        ("AWS_DEPLOY_SECRET".to_string(), "test-secret-key".to_string()),
        ("DB_PASSWORD".to_string(), "unused-env-password".to_string()),
        ("EXPECTED_PW".to_string(), DB_PASSWORD.to_string()),
    ];
    let _d = Delegate::enrol(
        &m,
        "vault-aws",
        DelegateOpts { tags: vec!["local".into()], env, ..Default::default() },
    )?;
    m.apply(&examples_dir().join("ecs.yaml"))?;
    let file = dir.path().join("orders.yaml");
    std::fs::write(&file, PIPELINE)?;
    m.apply(&file)?;

    let id = m.run_pipeline(
        "orders_vault",
        &[
            "--set",
            &format!("awsEndpoint={}", moto.endpoint()),
            "--set",
            &format!("subnet={subnet}"),
            "--set",
            &format!("securityGroup={sg}"),
        ],
    )?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}\n{}", m.step_logs(&id, "deploy.migrate").unwrap_or_default());

    // The shell step had the real value (it compared it) and printed only masks.
    let shell = m.step_logs(&id, "deploy.migrate")?;
    assert!(shell.contains("password matches"), "{shell}");
    assert!(shell.contains("connecting with **************"), "the value is masked: {shell}");
    assert!(shell.contains("as base64 **************"), "its base64 too: {shell}");
    let b64 = base64_of(DB_PASSWORD);
    for leaked in [DB_PASSWORD, b64.as_str()] {
        assert!(!shell.contains(leaked), "{leaked:?} in the shell step's log:\n{shell}");
    }
    // ECS got the value in the task definition's environment.
    let env = moto.py(
        "out = ecs.describe_task_definition(taskDefinition='orders:1')['taskDefinition']['containerDefinitions'][0]['environment']",
    )?;
    assert!(
        env.as_array()
            .is_some_and(|a| a.iter().any(|v| v["name"] == "DB_PASSWORD" && v["value"] == DB_PASSWORD)),
        "{env}"
    );
    let deploy = m.step_logs(&id, "deploy.rolling")?;
    assert!(!deploy.contains(DB_PASSWORD) && !deploy.contains(&b64), "{deploy}");
    // The manager never had it: not in its database, not in its log.
    let stored = String::from_utf8_lossy(&store_dump(&m)?).to_string();
    assert!(
        !stored.contains(DB_PASSWORD) && !stored.contains(&b64),
        "the password reached the manager's store"
    );
    assert!(!m.log().contains(DB_PASSWORD), "the password reached the manager's log");
    assert!(!stored.contains(&token), "the Vault token reached the manager's store");
    Ok(())
}
fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
