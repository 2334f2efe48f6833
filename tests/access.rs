//! Access control and hostile groups, against a real server: only members
//! with the credentials may add or remove members, and what the library did
//! not write never becomes master.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{raw_client, wait_for, ZkServer};
use zk_master::{Config, Election, Error, Role};
use zookeeper::{Acl, CreateMode, Permission, ZkError, ZooKeeper};

const SOON: Duration = Duration::from_secs(10);

fn config(server: &ZkServer, group: &str) -> Config {
    Config::new(server.connect_string())
        .group(group)
        .session_timeout(Duration::from_millis(2000))
        .connect_timeout(Duration::from_secs(5))
}

fn with_digest(zk: ZooKeeper, user_password: &str) -> ZooKeeper {
    zk.add_auth("digest", user_password.as_bytes().to_vec())
        .expect("add_auth");
    zk
}

fn create(zk: &ZooKeeper, path: &str, mode: CreateMode) -> Result<String, ZkError> {
    zk.create(path, b"x".to_vec(), Acl::open_unsafe().clone(), mode)
}

#[test]
fn without_the_credentials_no_one_can_add_or_remove_members() {
    common::init_logging();
    let server = ZkServer::start();
    let member =
        Election::join(config(&server, "/secure/workers").auth("workers:s3cret")).expect("join");
    assert!(member.wait_until_master(SOON));
    let node = format!("/secure/workers/{}", member.member_name().unwrap());

    let strangers = [
        ("no credentials", raw_client(&server.connect_string())),
        (
            "wrong password",
            with_digest(raw_client(&server.connect_string()), "workers:guess"),
        ),
        (
            "other user",
            with_digest(raw_client(&server.connect_string()), "mallory:s3cret"),
        ),
    ];
    for (who, zk) in &strangers {
        assert_eq!(
            zk.delete(&node, None),
            Err(ZkError::NoAuth),
            "{who} deleted the master's node"
        );
        assert_eq!(
            create(zk, "/secure/workers/a", CreateMode::EphemeralSequential),
            Err(ZkError::NoAuth),
            "{who} created a member"
        );
        assert_eq!(
            zk.delete("/secure/workers", None),
            Err(ZkError::NoAuth),
            "{who} deleted the group"
        );
        assert_eq!(
            zk.get_children("/secure/workers", false).map(|c| c.len()),
            Ok(1),
            "{who} can read"
        );
    }
    assert!(member.is_master(), "still master after every attempt");

    // Another member with the same credentials joins and takes over normally.
    let second =
        Election::join(config(&server, "/secure/workers").auth("workers:s3cret")).expect("join");
    member.resign();
    assert!(second.wait_until_master(SOON));
}

#[test]
fn a_closed_group_cannot_even_be_listed_by_others() {
    common::init_logging();
    let server = ZkServer::start();
    let member = Election::join(
        config(&server, "/closed")
            .auth("workers:s3cret")
            .readable_by_anyone(false),
    )
    .expect("join");
    assert!(member.wait_until_master(SOON));
    let zk = raw_client(&server.connect_string());
    assert_eq!(zk.get_children("/closed", false), Err(ZkError::NoAuth));
    let friend = with_digest(raw_client(&server.connect_string()), "workers:s3cret");
    assert_eq!(
        friend.get_children("/closed", false).map(|c| c.len()),
        Ok(1)
    );
}

#[test]
fn wrong_credentials_fail_join_at_once_with_an_access_error() {
    common::init_logging();
    let server = ZkServer::start();
    let _owner = Election::join(config(&server, "/owned").auth("workers:s3cret")).expect("join");
    for wrong in [
        config(&server, "/owned").auth("workers:wrong"),
        config(&server, "/owned"),
    ] {
        let started = Instant::now();
        match Election::join(wrong) {
            Err(Error::AccessDenied { op, path, .. }) => {
                assert_eq!(op, "create");
                assert!(path.starts_with("/owned/"), "{path}");
            }
            other => panic!("expected AccessDenied, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "it looped");
    }
}

#[test]
fn an_existing_group_that_forbids_us_is_a_clear_error() {
    common::init_logging();
    let server = ZkServer::start();
    let zk = with_digest(raw_client(&server.connect_string()), "admin:pw");
    let admin_only = vec![
        Acl::new(Permission::ALL, "auth", ""),
        Acl::new(Permission::READ, "world", "anyone"),
    ];
    zk.create("/locked", Vec::new(), admin_only, CreateMode::Persistent)
        .expect("create");
    let err = Election::join(config(&server, "/locked")).unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("/locked"), "{err}");
}

#[test]
fn children_the_library_did_not_write_never_lead() {
    common::init_logging();
    let server = ZkServer::start();
    let zk = raw_client(&server.connect_string());
    create(&zk, "/mess", CreateMode::Persistent).unwrap();
    create(&zk, "/mess/readme", CreateMode::Persistent).unwrap();
    create(&zk, "/mess/worker", CreateMode::Persistent).unwrap();
    create(&zk, "/mess/worker12", CreateMode::Ephemeral).unwrap();
    // A persistent node with a perfect member name and the lowest sequence number.
    let impostor = create(&zk, "/mess/worker", CreateMode::PersistentSequential).unwrap();
    let member = Election::join(config(&server, "/mess")).expect("join");
    assert!(
        member.wait_until_master(SOON),
        "the impostor {impostor} must not lead"
    );
    let names: Vec<String> = member
        .members()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(names, [member.member_name().unwrap()]);
}

#[test]
fn ten_thousand_strangers_in_the_group() {
    common::init_logging();
    let server = ZkServer::start();
    let setup = raw_client(&server.connect_string());
    create(&setup, "/crowd", CreateMode::Persistent).unwrap();
    drop(setup);
    let connect = server.connect_string();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let connect = connect.clone();
            thread::spawn(move || {
                let zk = raw_client(&connect);
                for i in (w..10_000).step_by(4) {
                    create(&zk, &format!("/crowd/stranger-{i}"), CreateMode::Persistent).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let started = Instant::now();
    let first = Arc::new(Election::join(config(&server, "/crowd")).expect("join"));
    let second = Election::join(config(&server, "/crowd")).expect("join");
    eprintln!("two joins among 10 000 children: {:?}", started.elapsed());
    assert!(first.wait_until_master(SOON));
    wait_for(SOON, "the second sees both members", || {
        second.members().len() == 2
    });
    assert_eq!(second.role(), Role::Slave);
    first.resign();
    assert!(second.wait_until_master(SOON));
}

#[test]
fn the_example_worker_takes_credentials() {
    common::init_logging();
    let server = ZkServer::start();
    let connect = server.connect_string();
    let mut worker = common::Worker::spawn_with(&[
        "--connect",
        &connect,
        "--group",
        "/guarded",
        "--session-timeout-ms",
        "2000",
        "--auth",
        "workers:s3cret",
    ]);
    worker.expect("I've become master!");
    let zk = raw_client(&connect);
    let children = zk
        .get_children("/guarded", false)
        .expect("readable by default");
    let node = format!("/guarded/{}", children.first().expect("the worker's node"));
    assert_eq!(zk.delete(&node, None), Err(ZkError::NoAuth));
    worker.terminate();
    assert_eq!(worker.wait_exit(), Some(0));
    assert_eq!(
        zk.get_children("/guarded", false).map(|c| c.len()),
        Ok(0),
        "resigned with the credentials"
    );
}
