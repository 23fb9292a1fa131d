-- A regular join: Nexmark q3 (persons from three states and their auctions of category 10), then
-- a LEFT JOIN counting every Oregon person's auctions (an updating result: a person is printed
-- with 0 auctions first, then updated as their auctions arrive). No external services needed.
--   flowline run examples/join.sql

SET 'parallelism.default' = '2';

CREATE TABLE nexmark (
  event_type INT,
  person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  dateTime AS CASE WHEN event_type = 0 THEN person.dateTime WHEN event_type = 1 THEN auction.dateTime ELSE bid.dateTime END,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '20000', 'base-time' = '2026-01-01 00:00:00', 'seed' = '42');

-- Flink's Nexmark views: a field access is named by its field (person.id is `id`).
CREATE VIEW person AS SELECT person.id, person.name, person.emailAddress, person.creditCard, person.city, person.state, dateTime, person.extra FROM nexmark WHERE event_type = 0;
CREATE VIEW auction AS SELECT auction.id, auction.itemName, auction.description, auction.initialBid, auction.reserve, dateTime, auction.expires, auction.seller, auction.category, auction.extra FROM nexmark WHERE event_type = 1;

CREATE TABLE q3 (name VARCHAR, city VARCHAR, state VARCHAR, id BIGINT) WITH ('connector' = 'print', 'print-identifier' = 'q3');
CREATE TABLE auctions_per_person (name VARCHAR, auctions BIGINT) WITH ('connector' = 'print', 'print-identifier' = 'per-person');

INSERT INTO q3
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');

INSERT INTO auctions_per_person
SELECT P.name, COUNT(A.id)
FROM person AS P LEFT JOIN auction AS A ON A.seller = P.id
WHERE P.state = 'OR'
GROUP BY P.name;
