//! Reading trigger definitions (entities of kind `trigger`) from the store.

use crate::model::entities::Trigger;
use crate::model::load::entity_from_json;
use crate::model::{Entity, Kind};
use crate::store::entities::{EntityKey, EntityRecord};
use crate::store::triggers::TriggerRef;
use crate::store::{Error, Store};

/// The entity key of a trigger.
pub fn entity_key(t: &TriggerRef) -> EntityKey {
    EntityKey::new(&t.account, &t.org, &t.project, Kind::Trigger.key(), &t.identifier)
}

/// The trigger a stored entity key names.
pub fn trigger_ref(key: &EntityKey) -> TriggerRef {
    TriggerRef::new(&key.account, &key.org, &key.project, &key.identifier)
}

/// The typed trigger of a stored record.
pub fn parse(record: &EntityRecord) -> Result<Trigger, Error> {
    let corrupt = |reason: String| Error::Corrupt { table: "entities", id: record.key.to_string(), reason };
    match entity_from_json(Kind::Trigger, &record.json_value()?) {
        Ok(Entity::Trigger(t)) => Ok(t),
        Ok(other) => Err(corrupt(format!("stored as a trigger but reads as a {}", other.kind()))),
        Err(e) => Err(corrupt(e.to_string())),
    }
}

/// One trigger, if it exists.
pub async fn load(store: &dyn Store, t: &TriggerRef) -> Result<Option<Trigger>, Error> {
    match store.get_entity(&entity_key(t)).await? {
        Some(record) => parse(&record).map(Some),
        None => Ok(None),
    }
}
