-- How many changes have been announced (NOTIFY) so far: bumped in each announcing transaction,
-- so a host's periodic check that it missed nothing costs one read when nothing changed.
CREATE TABLE announcements (
    id         int PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO announcements (id, generation) VALUES (1, 0);
