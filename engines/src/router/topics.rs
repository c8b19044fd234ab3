//! The local topic table: which topics this node knows, who created them
//! here, and which local engines subscribe, in subscription order.

use std::collections::HashMap;

use netmachine_domain::{EngineName, TopicAdvert, TopicIdentity};

use super::error::TopicError;

#[derive(Debug)]
pub(crate) struct Topic {
    pub advert: TopicAdvert,
    /// The local engine that created it; `None` for a topic known only from
    /// its advert (created elsewhere).
    pub creator: Option<EngineName>,
    pub subscribers: Vec<EngineName>,
}

#[derive(Debug)]
pub(crate) struct TopicTable {
    topics: HashMap<TopicIdentity, Topic>,
    max_topics: usize,
    max_subscribers: usize,
}

impl TopicTable {
    pub fn new(max_topics: usize, max_subscribers: usize) -> Self {
        Self { topics: HashMap::new(), max_topics, max_subscribers }
    }

    pub fn get(&self, topic: &TopicIdentity) -> Option<&Topic> {
        self.topics.get(topic)
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn create(&mut self, creator: EngineName, advert: TopicAdvert) -> Result<(), TopicError> {
        let id = advert.topic;
        match self.topics.get_mut(&id) {
            Some(existing) if existing.creator.is_some() => Err(TopicError::AlreadyExists(id)),
            Some(existing) => {
                // Known from an advert only: this engine now owns it here.
                existing.creator = Some(creator);
                if advert.version > existing.advert.version {
                    existing.advert = advert;
                }
                Ok(())
            }
            None => {
                self.check_room()?;
                self.topics.insert(id, Topic { advert, creator: Some(creator), subscribers: Vec::new() });
                Ok(())
            }
        }
    }

    /// Records or refreshes a topic advert that arrived from elsewhere (it
    /// has been verified by the identity store). A newer version replaces
    /// the advert; subscriptions stay.
    pub fn learn(&mut self, advert: TopicAdvert) -> Result<(), TopicError> {
        match self.topics.get_mut(&advert.topic) {
            Some(existing) => {
                if advert.version > existing.advert.version {
                    existing.advert = advert;
                }
                Ok(())
            }
            None => {
                self.check_room()?;
                self.topics.insert(advert.topic, Topic { advert, creator: None, subscribers: Vec::new() });
                Ok(())
            }
        }
    }

    /// Forgets a topic known only from its advert, unless a local engine
    /// subscribes to it.
    pub fn forget_learned(&mut self, topic: &TopicIdentity) {
        if self.topics.get(topic).is_some_and(|t| t.creator.is_none() && t.subscribers.is_empty()) {
            self.topics.remove(topic);
        }
    }

    pub fn delete(&mut self, by: &EngineName, topic: &TopicIdentity) -> Result<Topic, TopicError> {
        let entry = self.topics.get(topic).ok_or(TopicError::Unknown(*topic))?;
        match &entry.creator {
            Some(creator) if creator == by => self.topics.remove(topic).ok_or(TopicError::Unknown(*topic)),
            Some(creator) => Err(TopicError::NotCreator { topic: *topic, creator: creator.to_string() }),
            None => Err(TopicError::NotCreator { topic: *topic, creator: "another node".into() }),
        }
    }

    /// Subscribing twice is one subscription.
    pub fn subscribe(&mut self, engine: EngineName, topic: &TopicIdentity) -> Result<(), TopicError> {
        let entry = self.topics.get_mut(topic).ok_or(TopicError::Unknown(*topic))?;
        if entry.subscribers.contains(&engine) {
            return Ok(());
        }
        if entry.subscribers.len() >= self.max_subscribers {
            return Err(TopicError::TooManySubscribers { topic: *topic, max: self.max_subscribers });
        }
        entry.subscribers.push(engine);
        Ok(())
    }

    /// Returns whether the engine was subscribed.
    pub fn unsubscribe(&mut self, engine: &EngineName, topic: &TopicIdentity) -> Result<bool, TopicError> {
        let entry = self.topics.get_mut(topic).ok_or(TopicError::Unknown(*topic))?;
        let before = entry.subscribers.len();
        entry.subscribers.retain(|s| s != engine);
        Ok(entry.subscribers.len() != before)
    }

    /// Drops every subscription of an engine that goes away.
    pub fn forget_engine(&mut self, engine: &EngineName) {
        for topic in self.topics.values_mut() {
            topic.subscribers.retain(|s| s != engine);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TopicIdentity, &Topic)> {
        self.topics.iter()
    }

    fn check_room(&self) -> Result<(), TopicError> {
        if self.topics.len() >= self.max_topics {
            Err(TopicError::TooManyTopics(self.max_topics))
        } else {
            Ok(())
        }
    }
}
