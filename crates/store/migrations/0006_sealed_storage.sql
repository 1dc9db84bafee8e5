-- 0006: sealed columns are stored without compression; the comments name every sealed field.
--
-- Runs as datapunk_owner inside one transaction. Migrations are append-only: never edit this
-- file after release; add the next number instead.
--
-- A sealed value is OpenPGP ciphertext, which no compressor shrinks. With the default storage
-- PostgreSQL still tries pglz on every row over its TOAST threshold (about 2 kB, which a contact
-- or a long invitation passes) before it gives up and stores the value out of line; EXTERNAL
-- goes straight to the out-of-line step. Existing rows are unchanged; new and rewritten rows
-- skip the attempt.

ALTER TABLE datapunk.calendar_events ALTER COLUMN sealed SET STORAGE EXTERNAL;
ALTER TABLE datapunk.contacts ALTER COLUMN sealed SET STORAGE EXTERNAL;
ALTER TABLE datapunk.plays ALTER COLUMN sealed SET STORAGE EXTERNAL;
ALTER TABLE datapunk.saved_tracks ALTER COLUMN sealed SET STORAGE EXTERNAL;
ALTER TABLE datapunk.playlists ALTER COLUMN sealed SET STORAGE EXTERNAL;

-- 0005 left recurrence rules and organizations out of these lists.
COMMENT ON TABLE datapunk.calendar_events IS
    'Calendar events; sealed holds summary, description, location, organizer, attendees, '
    'recurrence, raw.';
COMMENT ON TABLE datapunk.contacts IS
    'Contacts; nothing about a person is plaintext: sealed holds names, emails, phones, '
    'addresses, birthday, notes, organizations, raw.';
