#!/bin/bash
# Initiates the replica set rs0 of MONGO_REPLICAS members (mongo-N.mongo:27017) and creates or
# updates the application user `boxoffice` (readWrite on the boxoffice database). Idempotent:
# run by the mongo-init Job after every apply.
set -euo pipefail

auth=(--quiet --username "$MONGO_ROOT_USERNAME" --password "$MONGO_ROOT_PASSWORD" --authenticationDatabase admin)
members=""
seeds=""
for ((i = 0; i < MONGO_REPLICAS; i++)); do
  members+="{_id: $i, host: 'mongo-$i.mongo:27017'},"
  seeds+="mongo-$i.mongo:27017,"
done
seeds=${seeds%,}

retry() {
  local attempt
  for attempt in $(seq 1 90); do
    if "$@"; then return 0; fi
    echo "not yet (attempt $attempt), retrying in 2 s" >&2
    sleep 2
  done
  return 1
}

initiate() {
  mongosh "mongodb://mongo-0.mongo:27017/admin?directConnection=true" "${auth[@]}" --eval "
    try {
      rs.status();
      print('replica set rs0 already initiated');
    } catch (error) {
      if (error.codeName !== 'NotYetInitialized') throw error;
      rs.initiate({_id: 'rs0', members: [$members]});
      print('replica set rs0 initiated');
    }"
}

has_primary() {
  mongosh "mongodb://$seeds/admin?replicaSet=rs0" "${auth[@]}" --eval "quit(db.hello().isWritablePrimary ? 0 : 1)"
}

ensure_app_user() {
  mongosh "mongodb://$seeds/admin?replicaSet=rs0" "${auth[@]}" --eval "
    const roles = [{role: 'readWrite', db: 'boxoffice'}];
    if (db.getUser('boxoffice')) {
      db.updateUser('boxoffice', {pwd: process.env.MONGO_APP_PASSWORD, roles: roles});
      print('user boxoffice updated');
    } else {
      db.createUser({user: 'boxoffice', pwd: process.env.MONGO_APP_PASSWORD, roles: roles});
      print('user boxoffice created');
    }"
}

retry initiate
retry has_primary
retry ensure_app_user
