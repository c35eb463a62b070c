//! A private moto server (PyPI `moto[server]`, installed into the peers' venv
//! by `scripts/peers.sh`): one loopback port that emulates every AWS service
//! the AWS targets use (ECS, ELBv2, Lambda, IAM, EC2). Tests set it up and
//! check it with small boto3 snippets run by the venv's Python (boto3 comes
//! with moto).
//!
//! What moto does not model (see the delegate's unit tests for those paths):
//! rollouts (a service keeps one deployment; `runningCount` follows
//! `desiredCount` on update and is `MOTO_ECS_SERVICE_RUNNING` on create, set to
//! 1 here), tasks of services, containers exiting on their own, Lambda code
//! running, alias weights applied to invokes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{free_port, http_get, http_post, peers, wait_for};

/// Tasks moto reports running for a service it creates (see the module docs).
pub const SERVICE_RUNNING: u32 = 1;
/// Region the tests use.
pub const REGION: &str = "us-east-1";

/// A running moto server; killed on drop.
pub struct Moto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts one with Lambda in no-Docker mode.
    pub fn start() -> anyhow::Result<Moto> {
        peers::require();
        let bin = peers::venv_bin("moto_server");
        anyhow::ensure!(bin.exists(), "moto is not installed: run `bash scripts/peers.sh`");
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ECS_SERVICE_RUNNING", SERVICE_RUNNING.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let m = Moto { port, child };
        wait_for("moto to answer", Duration::from_secs(60), || {
            http_get(port, "/moto-api/").filter(|(c, _)| *c == 200)
        })?;
        let (code, body) = http_post(
            port,
            "/moto-api/config",
            &[("Content-Type", "application/json")],
            br#"{"lambda":{"use_docker":false}}"#,
        )
        .ok_or_else(|| anyhow::anyhow!("moto config request failed"))?;
        anyhow::ensure!(
            (200..300).contains(&code) && body.contains(r#""lambda": {"use_docker": false}"#),
            "moto config: {code} {body}"
        );
        Ok(m)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `script` (Python) with boto3 clients `ecs`, `elb`, `lam`, `iam`,
    /// `ec2` bound to this server; the script sets `out`, returned as JSON.
    pub fn py(&self, script: &str) -> anyhow::Result<Value> {
        let prelude = format!(
            "import boto3, json, sys\n\
             kw = dict(endpoint_url='{}', region_name='{REGION}', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             ecs = boto3.client('ecs', **kw); elb = boto3.client('elbv2', **kw); lam = boto3.client('lambda', **kw)\n\
             iam = boto3.client('iam', **kw); ec2 = boto3.client('ec2', **kw)\n\
             out = None\n",
            self.endpoint()
        );
        let output = Command::new(peers::python())
            .arg("-c")
            .arg(format!("{prelude}{script}\nprint(json.dumps(out, default=str))\n"))
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "python failed: {}\n{script}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Creates the IAM role Lambda functions run as; returns its ARN.
    pub fn lambda_role(&self) -> anyhow::Result<String> {
        let v = self.py("doc = json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', \
             'Principal': {'Service': 'lambda.amazonaws.com'}, 'Action': 'sts:AssumeRole'}]})\n\
             out = iam.create_role(RoleName='lambda-exec', AssumeRolePolicyDocument=doc)['Role']['Arn']")?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Creates cluster `name`.
    pub fn cluster(&self, name: &str) -> anyhow::Result<()> {
        self.py(&format!("out = ecs.create_cluster(clusterName='{name}')['cluster']['clusterArn']"))?;
        Ok(())
    }

    /// A default-VPC subnet and security group for awsvpc tasks and services:
    /// `(subnet, security group, vpc)`.
    pub fn network(&self) -> anyhow::Result<(String, String, String)> {
        let v = self.py(
            "s = ec2.describe_subnets()['Subnets'][0]\n\
             g = ec2.describe_security_groups(Filters=[{'Name': 'vpc-id', 'Values': [s['VpcId']]}])['SecurityGroups'][0]\n\
             out = [s['SubnetId'], g['GroupId'], s['VpcId']]",
        )?;
        let s = |i: usize| v[i].as_str().unwrap_or_default().to_string();
        Ok((s(0), s(1), s(2)))
    }

    /// A load balancer with target groups `blue` and `green`, a production
    /// listener (port 80) and a stage listener (port 8080), each with one rule
    /// forwarding to one group. Returns the ARNs as JSON: `prodListener`,
    /// `prodRule`, `stageListener`, `stageRule`, `blue`, `green`.
    pub fn blue_green(&self) -> anyhow::Result<Value> {
        self.py(
            "subs = ec2.describe_subnets()['Subnets']\n\
             vpc = subs[0]['VpcId']\n\
             lb = elb.create_load_balancer(Name='web', Subnets=[x['SubnetId'] for x in subs[:2]])['LoadBalancers'][0]['LoadBalancerArn']\n\
             tg = lambda n: elb.create_target_group(Name=n, Protocol='HTTP', Port=80, VpcId=vpc, TargetType='ip')['TargetGroups'][0]['TargetGroupArn']\n\
             blue, green = tg('blue'), tg('green')\n\
             fwd = lambda g: [{'Type': 'forward', 'TargetGroupArn': g}]\n\
             pl = elb.create_listener(LoadBalancerArn=lb, Protocol='HTTP', Port=80, DefaultActions=fwd(blue))['Listeners'][0]['ListenerArn']\n\
             sl = elb.create_listener(LoadBalancerArn=lb, Protocol='HTTP', Port=8080, DefaultActions=fwd(green))['Listeners'][0]['ListenerArn']\n\
             rule = lambda l, g: elb.create_rule(ListenerArn=l, Priority=10, Conditions=[{'Field': 'path-pattern', 'Values': ['/*']}], Actions=fwd(g))['Rules'][0]['RuleArn']\n\
             out = {'loadBalancer': lb, 'prodListener': pl, 'prodRule': rule(pl, blue), 'stageListener': sl, 'stageRule': rule(sl, green), 'blue': blue, 'green': green}",
        )
    }

    /// The target group listener rule `rule` forwards to.
    pub fn rule_target(&self, rule: &str) -> anyhow::Result<String> {
        let v = self.py(&format!(
            "a = [x for x in elb.describe_rules(RuleArns=['{rule}'])['Rules'][0]['Actions'] if x['Type'] == 'forward'][0]\n\
             out = a.get('TargetGroupArn') or a['ForwardConfig']['TargetGroups'][0]['TargetGroupArn']"
        ))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// DescribeServices of `service` on `cluster` (the first entry, with tags).
    pub fn service(&self, cluster: &str, service: &str) -> anyhow::Result<Value> {
        self.py(&format!(
            "r = ecs.describe_services(cluster='{cluster}', services=['{service}'], include=['TAGS'])\n\
             out = (r['services'] or [None])[0]"
        ))
    }

    /// The alias `alias` of `function`: `FunctionVersion` and `RoutingConfig`.
    pub fn alias(&self, function: &str, alias: &str) -> anyhow::Result<Value> {
        self.py(&format!("out = lam.get_alias(FunctionName='{function}', Name='{alias}')"))
    }
}

/// Writes `code.zip` in `dir` holding `app.py` with `body`; returns its path.
pub fn lambda_zip(dir: &std::path::Path, body: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("code.zip");
    let status = Command::new(peers::python())
        .arg("-c")
        .arg(format!(
            "import zipfile\nz = zipfile.ZipFile('{}', 'w')\nz.writestr('app.py', '''{body}''')\nz.close()",
            path.display()
        ))
        .status()?;
    anyhow::ensure!(status.success(), "could not write the zip");
    Ok(path)
}
