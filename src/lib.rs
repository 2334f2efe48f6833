//! zk-master: master election through Apache ZooKeeper.
