-- blobmount metadata store: the one reference for every table and column.
--
-- One sqlite database per cache folder (<cache_dir>/blobmount.sqlite, WAL mode),
-- opened by one daemon at a time (the daemon holds a lock file beside it).
-- `meta.schema_version` says which version of this file made the database (now 8);
-- store.py migrates older ones forward, step by step.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,  -- 'schema_version'
    value TEXT NOT NULL
);

-- The tree shown under the mount point. Inodes live for one mount only, since the
-- kernel forgets every inode on unmount: the table is TEMP, the connection's own (in
-- memory, spilling to an unsynced temporary file), so that the many changes a file's
-- life makes (each write, each chmod) cost no write-ahead log and no commit on disk:
-- 2.6 us an update, against 15 us in the database file. Earlier versions kept it in
-- the file: that table goes (an earlier version opening the database makes it again).
-- AUTOINCREMENT: a number is never given twice, so one the kernel still holds for a
-- removed file or folder can never name another.
DROP TABLE IF EXISTS main.nodes;
CREATE TEMP TABLE IF NOT EXISTS nodes (
    inode     INTEGER PRIMARY KEY AUTOINCREMENT,  -- 1 is the mount point itself
    parent    INTEGER NOT NULL,     -- parent inode; the root is its own parent; 0 for a
                                    -- file unlinked while open (kept until its last
                                    -- close, named '#inode', its blob '\0orphan/inode')
    name      TEXT NOT NULL,        -- the name shown (one POSIX segment); '' for the root
    is_dir    INTEGER NOT NULL,     -- 1 folder, 0 file
    entry     INTEGER,              -- index of the mount entry in the config; NULL for
                                    -- folders of the mount table itself (root, and the
                                    -- parents of a multi-segment `local`)
    blob      TEXT,                 -- file: the full blob name in the container;
                                    -- folder: its prefix, '' or ending in '/'
    size      INTEGER NOT NULL DEFAULT 0,  -- bytes (files); 0 for folders
    mtime_ns  INTEGER NOT NULL DEFAULT 0,  -- ns since the epoch: the blob's `mtime`
                                    -- metadata if it has one, else its Last-Modified;
                                    -- files written here: the last write (or utimens)
    etag      TEXT,                 -- the blob's ETag as listed; NULL for folders
    checked   REAL,                 -- files: wall time the attributes were last read
                                    -- from the container (listing or HEAD)
    listed    REAL,                 -- folders: wall time of the last complete listing;
                                    -- NULL = never listed; +inf (9e999) = never needs it
                                    -- (mount-table folders)
    seen      INTEGER NOT NULL DEFAULT 0,  -- listing generation that last saw it; a
                                    -- listing drops children it did not see
    local     INTEGER NOT NULL DEFAULT 0,  -- files: 1 while the cache holds bytes the
                                    -- container does not have yet (written, or waiting
                                    -- in `uploads`); folders: 1 while their marker blob
                                    -- waits in `uploads`. Listings leave the node alone
    mode      INTEGER,              -- permission bits (07777) kept in the blob's `mode`
                                    -- metadata (a folder's: its marker blob's); NULL =
                                    -- none, the settings' defaults show (posix.py)
    uid       INTEGER,              -- owner kept in `uid` / `gid` metadata; NULL = none
    gid       INTEGER,
    atime_ns  INTEGER,              -- `atime` metadata (utimensat); NULL = the mtime
    ctime_ns  INTEGER NOT NULL DEFAULT 0,  -- last change of bytes or attributes: the
                                    -- blob's Last-Modified, or when changed here
    is_link   INTEGER NOT NULL DEFAULT 0,  -- 1: a symlink (metadata is_symlink=true)
    link      TEXT,                 -- a symlink's target (its blob's content), once read
    special   INTEGER NOT NULL DEFAULT 0,  -- a FIFO's, socket's or device's type bits
                                    -- (S_IFIFO...), from the `mode` metadata; 0: none
    rdev      INTEGER NOT NULL DEFAULT 0,  -- a device's number (`rdev` metadata, hex)
    UNIQUE (parent, name)
);

-- A folder's subfolders, for its link count (st_nlink), which every answer about the
-- folder carries: without it each lookup in a folder of 10,000 files scanned them all
-- (2 ms). Partial: files, the most of the rows, are not in it.
CREATE INDEX IF NOT EXISTS subfolders ON nodes (parent) WHERE is_dir = 1;
-- The node of a blob: each upload's end, and each copy of a rename, finds its file by
-- its name (without it, each read every node of the mount).
CREATE INDEX IF NOT EXISTS blobs ON nodes (entry, blob);

-- Cached copies of blobs. Kept across mounts: a copy whose ETag still matches the
-- blob is used again without a download.
CREATE TABLE IF NOT EXISTS cached_files (
    path        TEXT PRIMARY KEY,   -- absolute path of the cache file; a hash of
                                    -- account/container/blob under the entry's cache
                                    -- folder, so no blob name can place it elsewhere
    blob        TEXT NOT NULL,      -- blob name, for listing the cache
    etag        TEXT NOT NULL,      -- ETag of the blob the bytes came from
    size        INTEGER NOT NULL,   -- bytes, checked against the file before use
                                    -- ('partial': the bytes of its blocks)
    state       TEXT NOT NULL,      -- 'clean': identical to the blob with `etag`;
                                    -- 'partial': a sparse file the blob's size long
                                    -- holding only the blocks in `cached_blocks`;
                                    -- 'dirty': changed here, never evicted or replaced
                                    -- by a download until uploaded; open for writing,
                                    -- or journaled in `uploads`. One with neither at
                                    -- mount was never committed and is dropped
    last_access REAL NOT NULL       -- wall time of the last open, for eviction
);

-- Copies downloaded since the cache's file system was last synced (schema 8): installed
-- with no fsync of their own, so a crash of the machine may have cut them. A mount
-- after a daemon that did not stop cleanly drops those still clean (they download
-- again); a sync of the file system (copysync.py: every little while, and at the end
-- of a clean stop) empties the table up to the row it began at.
CREATE TABLE IF NOT EXISTS unsynced_copies (
    path TEXT PRIMARY KEY           -- cached_files.path
);

-- The blocks a 'partial' copy holds (schema 5), all of the version its
-- cached_files.etag names: a copy of another version is made anew, without them.
CREATE TABLE IF NOT EXISTS cached_blocks (
    path        TEXT NOT NULL,      -- cached_files.path of the partial copy
    start       INTEGER NOT NULL,   -- offset of the block's first byte
    size        INTEGER NOT NULL,   -- bytes (the blob's last block may be short)
    crc32       INTEGER NOT NULL,   -- CRC-32 of the block's bytes: a block an earlier
                                    -- daemon wrote is checked against it before use
                                    -- (blocks are not fsynced one by one)
    last_access REAL NOT NULL,      -- wall time of the last read, for eviction
    PRIMARY KEY (path, start)
) WITHOUT ROWID;

-- Edits of large copies uploaded by blocks (schema 7, patch.py): a copy being written
-- whose bytes are only partly here. The bytes not here are those of `etag` (the
-- blocks of cached_blocks are, and the rest is read from the blob's snapshot).
CREATE TABLE IF NOT EXISTS patches (
    path      TEXT PRIMARY KEY,     -- cached_files.path of the copy
    account   TEXT NOT NULL,        -- where the snapshot is
    container TEXT NOT NULL,
    blob      TEXT NOT NULL,
    etag      TEXT NOT NULL,        -- the version the unchanged bytes are of
    size      INTEGER NOT NULL,     -- bytes from the start that are that version's where
                                    -- not changed (its size, less by a truncate)
    snapshot  TEXT NOT NULL         -- the snapshot of that version the commit copies
                                    -- unchanged ranges from ('' = none)
);

-- The blocks (BLOCK-aligned starts) of a patch's copy written here: they go up whole.
CREATE TABLE IF NOT EXISTS patch_blocks (
    path  TEXT NOT NULL,            -- patches.path
    start INTEGER NOT NULL,
    PRIMARY KEY (path, start)
) WITHOUT ROWID;

-- The journal of uploads: a written file's row is committed (synchronous=FULL) after
-- its cache file is fsynced (or with its bytes, `data`) and before close() returns, so a crash, a kill -9 or a
-- reboot loses nothing: the next daemon with this cache folder uploads what is here.
CREATE TABLE IF NOT EXISTS uploads (
    path       TEXT PRIMARY KEY,     -- the cache file to upload (cached_files.path)
    account    TEXT NOT NULL,        -- account_name, container and blob say where to;
    container  TEXT NOT NULL,        -- matched against the config's entries at start
    blob       TEXT NOT NULL,
    base_etag  TEXT NOT NULL,        -- ETag of the blob version the file was based on;
                                     -- '' = a new file. A blob whose ETag differs is a
                                     -- conflict: both versions are kept
    version    INTEGER NOT NULL,     -- bumped by every close of a written file; an
                                     -- upload removes the row only if it is unchanged
    queued     REAL NOT NULL,        -- wall time of the first close not yet uploaded
    attempts   INTEGER NOT NULL DEFAULT 0,  -- failed attempts so far
    next_try   REAL NOT NULL DEFAULT 0,     -- wall time before which no retry is made
    last_error TEXT,                 -- the last failure, one line, for `status`
    mtime_ns   INTEGER,              -- the file's modification time (last write, or set
                                     -- by utimens), ns since the epoch; it goes up as the
                                     -- blob's `mtime` metadata. NULL: none (rows of v2)
    metadata   TEXT,                 -- JSON object of more metadata to put with the bytes
                                     -- (mode, uid, gid, atime); NULL: none (rows of v5)
    data       BLOB                  -- a small file's bytes (schema 8), durable with the
                                     -- row where a larger file's copy is fsynced first;
                                     -- made again from them at mount. When its upload is
                                     -- done, the copy joins unsynced_copies. NULL: the
                                     -- copy was fsynced
);
