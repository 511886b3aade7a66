-- Plinth's store on PostgreSQL: the same records the sled store keeps, one table per kind.
--
-- Keys the store seam treats as bytes are bytea and every text key is COLLATE "C", so every
-- ordering (scans, cursors, listings) is bytewise, whatever the database's collation.

-- Host metadata (admin token hash, ...).
CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

-- The generic keyspaces of the auth, config and audit modules (`Space`).
CREATE TABLE records (
    space text COLLATE "C" NOT NULL,
    key   bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (space, key)
);

-- Component bytes, content-addressed; a blob goes when no kept version uses it.
CREATE TABLE blobs (
    sha256 text COLLATE "C" PRIMARY KEY,
    bytes  bytea NOT NULL
);

-- Compiled code per component and engine fingerprint, so a version is compiled once in the
-- cluster; it goes with its blob.
CREATE TABLE artifacts (
    sha256      text COLLATE "C" NOT NULL REFERENCES blobs ON DELETE CASCADE,
    fingerprint text COLLATE "C" NOT NULL,
    bytes       bytea NOT NULL,
    PRIMARY KEY (sha256, fingerprint)
);

-- The next version number of every name ever deployed: kept after a delete, so numbers are
-- never reused.
CREATE TABLE plugin_names (
    name         text COLLATE "C" PRIMARY KEY,
    next_version bigint NOT NULL
);

-- The kept versions; `record` is the plugin record as JSON.
CREATE TABLE plugin_versions (
    name    text COLLATE "C" NOT NULL REFERENCES plugin_names,
    version bigint NOT NULL,
    sha256  text COLLATE "C" NOT NULL REFERENCES blobs,
    record  bytea NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX plugin_versions_by_blob ON plugin_versions (sha256);

-- The active version of every deployed plugin.
CREATE TABLE plugins (
    name    text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    FOREIGN KEY (name, version) REFERENCES plugin_versions
);

-- Every plugin's key-value data, and the bytes each plugin stores (kept by every write; its
-- row is also the lock that orders one plugin's writes across hosts).
CREATE TABLE kv (
    plugin text COLLATE "C" NOT NULL,
    bucket bytea NOT NULL,
    key    bytea NOT NULL,
    value  bytea NOT NULL,
    PRIMARY KEY (plugin, bucket, key)
);
CREATE TABLE kv_usage (
    plugin text COLLATE "C" PRIMARY KEY,
    bytes  bigint NOT NULL
);
