-- One database per component on the compose PostgreSQL (run once, on first start).
CREATE DATABASE monolith;
CREATE DATABASE control;
CREATE DATABASE ratings;
CREATE DATABASE credits;
CREATE DATABASE images;
