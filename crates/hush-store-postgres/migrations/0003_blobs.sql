-- Sealed file bytes (the blob port, P560) in the cluster's database, so a file
-- uploaded through one node downloads through any other. Pieces as appended (each at
-- most a frame), found by the byte range they cover.
CREATE TABLE blobs (
    file_id BYTEA PRIMARY KEY,
    len     BIGINT NOT NULL DEFAULT 0,
    sealed  BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE blob_pieces (
    file_id BYTEA NOT NULL REFERENCES blobs(file_id) ON DELETE CASCADE,
    start   BIGINT NOT NULL,
    stop    BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (file_id, start)
);
CREATE INDEX blob_pieces_by_stop ON blob_pieces(file_id, stop);
