"""Features and their dataset versions."""

from __future__ import annotations

import importlib

from sqlalchemy import select

from aiflywheel.store.base import StoreBase
from aiflywheel.store.schema import DatasetVersion, Feature, utcnow


class FeaturesStore(StoreBase):
    def upsert_feature(self, name: str, task: str, description: str, recipe: dict) -> Feature:
        with self.session() as session:
            # Insert-if-absent in one statement: two processes creating the same feature
            # at once must not fail on the unique name.
            dialect = session.get_bind().dialect.name
            if dialect in ("sqlite", "postgresql"):
                module = "sqlite" if dialect == "sqlite" else "postgresql"
                insert = importlib.import_module(f"sqlalchemy.dialects.{module}").insert
                session.execute(
                    insert(Feature)
                    .values(
                        name=name,
                        task=task,
                        description=description,
                        recipe=recipe,
                        created_at=utcnow(),
                        updated_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["name"])
                )
            feature = session.scalar(select(Feature).where(Feature.name == name))
            if feature is None:
                feature = Feature(name=name, task=task, description=description, recipe=recipe)
                session.add(feature)
            else:
                feature.task, feature.description, feature.recipe = task, description, recipe
                feature.updated_at = utcnow()
            session.flush()
            return feature

    def get_feature(self, name: str) -> Feature | None:
        with self.session() as session:
            return session.scalar(select(Feature).where(Feature.name == name))

    def list_features(self) -> list[Feature]:
        with self.session() as session:
            return list(session.scalars(select(Feature).order_by(Feature.name)))

    # -- dataset versions -----------------------------------------------------------
    def record_dataset_version(
        self,
        feature: str,
        *,
        content_hash: str,
        split_version: str,
        rows: int,
        labels: dict,
        source: str,
        path: str,
    ) -> DatasetVersion:
        """The version row for this content and split, created on first sight."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            existing = session.scalar(
                select(DatasetVersion).where(
                    DatasetVersion.feature_id == feature_id,
                    DatasetVersion.content_hash == content_hash,
                    DatasetVersion.split_version == split_version,
                )
            )
            if existing is not None:
                return existing
            version = DatasetVersion(
                feature_id=feature_id,
                content_hash=content_hash,
                split_version=split_version,
                rows=rows,
                labels=labels,
                source=source,
                path=path,
            )
            session.add(version)
            session.flush()
            return version

    def list_dataset_versions(self, feature: str) -> list[DatasetVersion]:
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            query = (
                select(DatasetVersion)
                .where(DatasetVersion.feature_id == feature_id)
                .order_by(DatasetVersion.id)
            )
            return list(session.scalars(query))
