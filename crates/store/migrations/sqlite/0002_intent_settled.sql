-- A pending intent whose last attempt is known to have ended (its write
-- was answered, or it never started) is "settled": the next attempt may
-- ask the target at once. An unsettled pending intent may still have a
-- request on its way to the target (its worker died or lost its lease
-- mid-call), so nobody writes the object again until that request can no
-- longer land.
ALTER TABLE intents ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
